#!/usr/bin/env bash
# The test command: makes its own virtual environment, installs edgesight with the train and
# dev extras (strict editable mode: the package laid out as installed, see the README), and runs
# the whole (offline) test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${EDGESIGHT_VENV:-.venv}"
PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e '.[train,dev]' --config-settings editable_mode=strict
exec "$VENV/bin/python" -m pytest -q "$@"
