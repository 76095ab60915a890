#!/usr/bin/env bash
# The main job on the built-in default: generate traffic-sign data, train, convert to a verified
# int8 bundle and run the camera loop headless on a generated dashcam video. Needs no data and no
# network. Artefacts land in ${1:-edgesight-demo}/; further arguments go to `edgesight demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${EDGESIGHT_VENV:-.venv}"
PY="${PYTHON:-python3}"
OUT="${1:-edgesight-demo}"
shift || true
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e '.[train]' --config-settings editable_mode=strict
exec "$VENV/bin/edgesight" demo --out "$OUT" "$@"
