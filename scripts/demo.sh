#!/usr/bin/env bash
# The main job on the built-in sample: generate a dataset, train a classifier and evaluate it.
# Needs no data and no network. Artefacts land in ${1:-edgesight-demo}/.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${EDGESIGHT_VENV:-.venv}"
PY="${PYTHON:-python3}"
OUT="${1:-edgesight-demo}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e '.[train]'
ES="$VENV/bin/edgesight"
"$ES" datasets synth "$OUT/data" --kind shapes --per-class 150 --size 48
"$ES" train "$OUT/data" --out "$OUT/run" --model cnn_small --img-size 48 --epochs 25 \
    --augment light --batch-size 32 --lr 3e-3 --overwrite
"$ES" evaluate "$OUT/run" --json "$OUT/run/evaluation.json"
echo "artefacts: $OUT/run (model.keras, labels.txt, model.json, metrics.json, training_curves.png, confusion_matrix.png)"
