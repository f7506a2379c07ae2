#!/usr/bin/env bash
# Test the package as users get it, the way cibuildwheel tests each wheel (`pytest {project}/tests`):
# build a wheel from a copy of the tracked files (nothing compiled in place can leak in), install it
# with its test extra into a fresh virtualenv, and run the test suite from an empty folder outside
# the checkout, on the compiled core (BEANSTALKC_FAST_REQUIRE_EXTENSION=1: no [cython] test skips).
#   --lowest   build with the lowest Cython and setuptools that pyproject.toml allows
#              (no build isolation); otherwise pip's isolated build with the newest ones
# Other arguments go to pytest instead of the default `-q -m "not slow" --benchmark-disable`
# (after the tests folder, e.g. `-q -k validation`).
# Needs $PYTHON (python3) with venv, a C compiler, beanstalkd and the package index.
# Used by .ci/run and tests.yml. Leaves nothing behind.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python3}
LOWEST=0
if [ "${1:-}" = --lowest ]; then
    LOWEST=1
    shift
fi
[ $# -gt 0 ] || set -- -q -m "not slow" --benchmark-disable
export PIP_DISABLE_PIP_VERSION_CHECK=1 BEANSTALKC_FAST_REQUIRE_EXTENSION=1
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
mkdir "$W/src" "$W/empty"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z | tar -c --null -T - | tar -x -C "$W/src"
else
    tar -c --exclude=./.venv --exclude=./build --exclude=./dist . | tar -x -C "$W/src"
fi

"$PYTHON" -m venv "$W/build"
if [ "$LOWEST" = 1 ]; then
    lowest() { sed -n "s/.*\"$1>=\([0-9.]*\)[,;\"].*/\1/p" pyproject.toml | head -n1; }
    cython=$(lowest Cython)
    setuptools=$(lowest setuptools)
    echo "== wheel built with the lowest build requirements: Cython==${cython:?} setuptools==${setuptools:?}"
    "$W/build/bin/pip" install -q "Cython==$cython" "setuptools==$setuptools" wheel
    "$W/build/bin/pip" wheel -q --no-build-isolation --no-deps -w "$W/dist" "$W/src"
else
    echo "== wheel built in an isolated build environment"
    "$W/build/bin/pip" wheel -q --no-deps -w "$W/dist" "$W/src"
fi
wheel=$(echo "$W"/dist/*.whl)
echo "   $(basename "$wheel")"

"$PYTHON" -m venv "$W/venv"
"$W/venv/bin/pip" install -q "$wheel[test]"
cd "$W/empty"
"$W/venv/bin/python" -c '
import os, sys
import beanstalkc_fast as b
assert b.BACKEND == "cython", b.BACKEND
assert not os.path.abspath(b.__file__).startswith(sys.argv[1] + os.sep), "imported from the checkout"
print("== testing", b.__file__, "BACKEND =", b.BACKEND)
' "$ROOT"
# no cacheprovider: pytest would write .pytest_cache into the checkout (its rootdir)
"$W/venv/bin/python" -m pytest "$ROOT/tests" -p no:cacheprovider "$@"
