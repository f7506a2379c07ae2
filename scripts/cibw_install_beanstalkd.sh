#!/bin/sh
# cibuildwheel's before-all on Linux (manylinux/musllinux containers, which have no beanstalkd
# package by default): build beanstalkd from source so the wheel tests can talk to a server.
# A failure here fails the wheel build: the wheel tests need a server (CI=true).
set -eu
command -v beanstalkd >/dev/null && exit 0
if command -v apk >/dev/null && apk add --no-cache beanstalkd; then
    exit 0
fi
version=1.12
cd /tmp
curl -fsSL "https://github.com/beanstalkd/beanstalkd/archive/refs/tags/v$version.tar.gz" | tar -xz
make -C "beanstalkd-$version" -j2
cp "beanstalkd-$version/beanstalkd" /usr/local/bin/
beanstalkd -v
