# Shared set-up for scripts/test.sh and scripts/demo.sh (sourced, not run).
# Works on a fresh Debian/Ubuntu machine (as root, or with sudo) and on a developer's machine:
# installs beanstalkd if it is missing, creates .venv in the checkout and installs the package
# into it, in place (editable), so the tests import the freshly compiled extension.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
PY=$VENV/bin/python

_as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "need root for: $*" >&2; return 1; fi
}

ensure_beanstalkd() {
    command -v beanstalkd >/dev/null && return 0
    if command -v apt-get >/dev/null; then
        _as_root apt-get update -q
        DEBIAN_FRONTEND=noninteractive _as_root apt-get install -y -q beanstalkd
    elif command -v brew >/dev/null; then
        brew install beanstalkd
    else
        echo "beanstalkd is not installed and there is no apt-get or brew: install it, or set BEANSTALKD=/path" >&2
        return 1
    fi
}

ensure_venv() {
    [ -x "$PY" ] && return 0
    if ! python3 -m venv "$VENV"; then
        # Debian's own python3 ships venv separately.
        rm -rf "$VENV"
        command -v apt-get >/dev/null || return 1
        DEBIAN_FRONTEND=noninteractive _as_root apt-get install -y -q python3-venv
        python3 -m venv "$VENV"
    fi
    "$PY" -m pip install -q --upgrade pip
}

# install_package EXTRAS: an editable install with the compiled core; a failed compile is an error.
install_package() {
    BEANSTALKC_FAST_REQUIRE_EXTENSION=1 "$PY" -m pip install -q -e "$ROOT[$1]"
    "$PY" -c 'import beanstalkc_fast; print("beanstalkc_fast", beanstalkc_fast.__version__, "BACKEND =", beanstalkc_fast.BACKEND)'
}
