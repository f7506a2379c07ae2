#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: installs beanstalkd if missing, builds the
# package with its compiled core into .venv, then runs the tests (both backends in one
# pytest run) and the benchmarks as tests (--benchmark-disable). Extra arguments go to pytest.
set -euo pipefail
. "$(dirname "$0")/_setup.sh"
cd "$ROOT"

ensure_beanstalkd
ensure_venv
install_package test

# The compiled core must be the one in use (tests/test_backend.py checks it too).
export BEANSTALKC_FAST_REQUIRE_EXTENSION=1
"$PY" -m pytest -q tests "$@"
if [ -d benchmarks ] && ls benchmarks/*.py >/dev/null 2>&1; then
    "$PY" -m pytest -q benchmarks --benchmark-disable
fi
