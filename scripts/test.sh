#!/usr/bin/env bash
# Run the whole test suite on a fresh machine: installs beanstalkd if missing, builds the
# package with its compiled core into .venv, then runs the tests (both backends in one
# pytest run) and the benchmarks once each as tests (--benchmark-disable).
# Arguments, if any, are passed to pytest instead: `bash scripts/test.sh tests/test_batch.py -x`.
set -euo pipefail
. "$(dirname "$0")/_setup.sh"
cd "$ROOT"

ensure_beanstalkd
ensure_venv
install_package test

# The compiled core must be the one in use (tests/test_backend.py checks it too).
# Any non-zero pytest exit fails the script, 5 (no test collected) included.
export BEANSTALKC_FAST_REQUIRE_EXTENSION=1
if [ $# -gt 0 ]; then
    exec "$PY" -m pytest "$@"
fi
"$PY" -m pytest -q tests
if [ -d benchmarks ]; then
    "$PY" -m pytest -q benchmarks --benchmark-disable
fi
