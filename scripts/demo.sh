#!/usr/bin/env bash
# The benchmark on a fresh machine: installs beanstalkd if missing, builds the package with its
# compiled core into .venv (with the peers it is compared to), then runs the comparison harness
# `benchmarks/compare.py` (it starts its own beanstalkd). Arguments go to the benchmark; with none
# it runs the quick version.
set -euo pipefail
. "$(dirname "$0")/_setup.sh"
cd "$ROOT"

ensure_beanstalkd
ensure_venv
install_package bench

[ $# -gt 0 ] || set -- --quick
"$PY" benchmarks/compare.py "$@"
