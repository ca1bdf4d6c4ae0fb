#!/usr/bin/env bash
# `make demo`: a short, real experiment through `mlflow run`, into ./mlflow.db and ./mlruns.
set -euo pipefail
cd "$(dirname "$0")/.."
export MLFLOW_DISABLE_TELEMETRY=true WANDB_MODE=disabled
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "IRED matrix inversion, adversarial negative mining (quick config) via mlflow run"
mlflow run . -e ired --env-manager local --experiment-name ired \
    -P config=quick -P mining.strategy=adversarial -P seed=0

step "The same task, baseline (no energy-landscape loss), from the labrun CLI"
labrun run ired --config quick --set mining.strategy=none --seed 0 --status baseline

step "A small sweep: strategies x seeds, resumable (run it again: finished cells are skipped)"
labrun sweep sweeps/specs/ired_quick.yaml

step "Statistics across seeds"
labrun analyze --experiment ired_quick --metric metric.mse.val

cat <<MSG

Results are in the embedded tracking store of this folder:
  runs      sqlite:///mlflow.db
  artifacts ./mlruns   (each run: config.yaml, REPORT.md, summary.json, logs/, figures/, checkpoints/)
Open them in the MLflow UI:
  labrun ui            (or: mlflow ui --backend-store-uri sqlite:///mlflow.db)   -> http://127.0.0.1:5000
MSG
