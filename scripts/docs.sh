#!/usr/bin/env bash
# Build the documentation site into docs/_build/html; a warning is an error (`make docs`, .ci/run).
# Python: $PYTHON, else .venv/bin/python when there is one, else python3. It needs the docs extra
# (`pip install -e '.[docs]'`); the reference documents the checkout's package (docs/conf.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
# -n: every cross-reference must resolve; --keep-going: report every warning, then fail.
exec "$PY" -m sphinx -W --keep-going -n -b html docs docs/_build/html "$@"
