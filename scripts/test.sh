#!/usr/bin/env bash
# The test command: makes its own virtual environment, installs edgesight with the train and
# dev extras (strict editable mode: the package laid out as installed, see the README), fills the
# wheel cache the deploy tests install from, and runs the whole (offline) test suite. Extra
# arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${EDGESIGHT_VENV:-.venv}"
PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e '.[train,dev]' --config-settings editable_mode=strict
# The tests never reach a package index: the wheels of this machine's deploy archives (installed
# offline by the deploy tests) go into the wheel cache now, or are found there.
"$VENV/bin/edgesight" wheels fetch generic-linux >/dev/null \
    || echo "test.sh: the wheel cache lacks this machine's wheels; the wheelhouse tests will be skipped" >&2
exec "$VENV/bin/python" -m pytest -q "$@"
