#!/usr/bin/env bash
# A GPU machine's check of labrun: quick configs of every task on CUDA, then one run across
# every visible GPU (torchrun + DDP, nccl) for the tasks that train on many processes, then a
# kill-and-resume of one such run. One line per check: PASS/FAIL, wall time, what ran.
# Exits non-zero if any check failed. On a machine without an NVIDIA GPU it says so and exits 0.
#
#   scripts/gpu_check.sh                 # into a fresh store under $TMPDIR
#   LABRUN_GPU_STORE=/path scripts/gpu_check.sh   # keep the runs somewhere you can open
#   LABRUN_GPU_CHECK_DEVICE=cpu scripts/gpu_check.sh  # the same checks on CPU, 2 processes (gloo):
#                                                    # how the script itself is tested without a GPU
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python)}"
export MLFLOW_DISABLE_TELEMETRY=true WANDB_MODE=disabled LABRUN_PROGRESS=0

device="${LABRUN_GPU_CHECK_DEVICE:-cuda}"
if [ "$device" = cpu ]; then
    gpus=2
else
    gpus=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)" 2>/dev/null || echo 0)
    if [ "${gpus:-0}" -eq 0 ]; then
        echo "gpu_check: no CUDA GPU visible to torch on $(hostname); nothing to check (exit 0)"
        exit 0
    fi
fi
store="${LABRUN_GPU_STORE:-$(mktemp -d "${TMPDIR:-/tmp}/labrun-gpu-XXXXXX")}"
mkdir -p "$store"
export MLFLOW_TRACKING_URI="sqlite:///$store/mlflow.db"
logs="$store/logs"; mkdir -p "$logs"
if [ "$device" = cpu ]; then
    echo "gpu_check: CPU rehearsal (LABRUN_GPU_CHECK_DEVICE=cpu), 2 processes; store $MLFLOW_TRACKING_URI"
else
    echo "gpu_check: $gpus GPU(s): $("$PY" -c "import torch; print(', '.join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())))"); store $MLFLOW_TRACKING_URI"
fi
failed=0

check() {  # check NAME -- command...
    local name=$1; shift 2
    local t0=$SECONDS
    if "$@" > "$logs/$name.log" 2>&1; then
        printf 'PASS %-28s %4ds  %s\n' "$name" $((SECONDS - t0)) "$*"
    else
        printf 'FAIL %-28s %4ds  %s  (log: %s)\n' "$name" $((SECONDS - t0)) "$*" "$logs/$name.log"
        tail -5 "$logs/$name.log" | sed 's/^/       /'
        failed=$((failed + 1))
    fi
}

# 1. every task's quick config on one GPU (dynamics trains in bf16 autocast there)
for task in toy ired ssvae mutual dynamics anomaly; do
    check "quick-$task" -- "$PY" -m labrun.cli run "$task" --config quick --set device=$device --name "gpu-$task"
done

# 2. one run across every GPU (torchrun, DDP with nccl), for the tasks that opt in (mutual: classification)
if [ "$gpus" -gt 1 ]; then
    for task in toy dynamics mutual; do
        check "ddp-$task-x$gpus" -- "$PY" -m labrun.cli run "$task" --config quick --set device=$device \
            --nproc "$gpus" --name "gpu-ddp-$task"
    done
fi

# 3. kill one rank's launcher group mid-run, then resume it: KILLED, then FINISHED
kill_and_resume() {
    local n=$1
    "$PY" -m labrun.cli run toy --config quick --set device=$device --nproc "$n" --name gpu-victim \
        --set train.steps=400 --set train.sleep_s=0.05 --set checkpoint.every=50 &
    local pid=$!
    for _ in $(seq 600); do
        sleep 0.5
        "$PY" - <<'EOF' && break
import sys, mlflow
c = mlflow.MlflowClient()
exp = c.get_experiment_by_name("toy")
runs = c.search_runs([exp.experiment_id], "attributes.run_name = 'gpu-victim'") if exp else []
sys.exit(0 if runs and any(a.path.endswith(".ptz") for a in c.list_artifacts(runs[0].info.run_id, "checkpoints")) else 1)
EOF
    done
    kill -TERM "$pid"; wait "$pid"
    local run_id
    run_id=$("$PY" -c "
import mlflow; c = mlflow.MlflowClient(); e = c.get_experiment_by_name('toy')
r = c.search_runs([e.experiment_id], \"attributes.run_name = 'gpu-victim'\")[0]
assert r.info.status == 'KILLED', r.info.status; print(r.info.run_id)") || return 1
    "$PY" -m labrun.cli run toy --nproc "$n" --resume "$run_id" --set train.sleep_s=0 --name gpu-resumed
}
check "kill-resume-x$gpus" -- kill_and_resume "$gpus"

echo "gpu_check: $failed check(s) failed; logs in $logs"
exit $((failed > 0))
