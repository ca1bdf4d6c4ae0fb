"""One process x 2 threads vs 2 processes x 1 thread (torchrun, DDP, gloo) on the dynamics GPT.

Both train the same global batch (``--batch`` sequences per step: all of it in one process,
half per rank under DDP) for ``--steps`` steps from the same seed, through ``labrun run`` into
a fresh SQLite store, and print:

- steps/s of the training loop (the task's own ``perf.step_ms``, mean over the steps after
  the first 10) and the wall time of each command (start-up included);
- the loss curves' largest relative difference, step by step (the two runs draw different
  batches, so this is sampling noise plus the DDP mean-of-halves, not an error);
- the communication share of a DDP step: one gloo ``all_reduce`` of the model's gradient
  size timed alone on the same 2 processes (mean of 50, after 5 warm-up), divided by the DDP
  step time. DDP overlaps it with the backward pass, so this is an upper bound.

Prints figures and asserts nothing. Run it alone on the machine: ``python bench/ddp_scaling.py``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PROBE = """
import os, sys, time, torch, torch.distributed as dist
dist.init_process_group("gloo")
torch.set_num_threads(1)
t = torch.randn(int(sys.argv[1]))
for _ in range(5):
    dist.all_reduce(t)
t0 = time.perf_counter()
for _ in range(50):
    dist.all_reduce(t)
if dist.get_rank() == 0:
    print((time.perf_counter() - t0) / 50 * 1e3)
dist.destroy_process_group()
"""


def _labrun(store: Path, name: str, args: list[str]) -> float:
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{store}/mlflow.db", LABRUN_PROGRESS="0",
               PYTHONPATH=str(REPO), MLFLOW_DISABLE_TELEMETRY="true", WANDB_MODE="disabled")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "labrun.cli", "run", "dynamics", "--name", name,
                           "--system-metrics", "off", *args], cwd=store, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def _series(store: Path, name: str, key: str) -> list[float]:
    from mlflow import MlflowClient

    c = MlflowClient(f"sqlite:///{store}/mlflow.db")
    exp = c.get_experiment_by_name("dynamics")
    (run,) = c.search_runs([exp.experiment_id], f"attributes.run_name = '{name}'")
    return [m.value for m in sorted(c.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]


def _allreduce_ms(n_params: int) -> float:
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(PROBE)
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                          fh.name, str(n_params)], capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    os.unlink(fh.name)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=16, help="global batch (sequences per step)")
    p.add_argument("--config", default="quick")
    a = p.parse_args()
    common = ["--config", a.config, "--set", f"train.steps={a.steps}", "--set", f"train.eval_every={a.steps}",
              "--set", "checkpoint.every=0", "--set", "instability.lr_spikes=[]"]
    store = Path(tempfile.mkdtemp(prefix="ddp-bench-"))
    wall1 = _labrun(store, "one", [*common, "--set", f"train.batch_size={a.batch}",
                                   "--set", "execution.num_threads=2"])
    wall2 = _labrun(store, "two", [*common, "--nproc", "2", "--set", f"train.batch_size={a.batch // 2}",
                                   "--set", "execution.num_threads=1"])
    ms1, ms2 = (_series(store, n, "perf.step_ms")[10:] for n in ("one", "two"))
    l1, l2 = (_series(store, n, "loss.train") for n in ("one", "two"))
    step1, step2 = sum(ms1) / len(ms1), sum(ms2) / len(ms2)
    rel = max(abs(x - y) / max(abs(x), 1e-12) for x, y in zip(l1, l2))
    from projects.dynamics.config import Config
    from projects.dynamics.model import GPT
    from projects.dynamics.data import Corpus
    from tracking.config import resolve_config

    cfg = resolve_config(Config, a.config, [])
    d, m = cfg.data, cfg.model
    vocab = Corpus(d.source, d.tokens, d.context, d.val_fraction, d.max_chars).vocab.size
    n = GPT(vocab, d.context, m.layers, m.d_model, m.heads, m.mlp_ratio, m.dropout).n_params()
    comm = _allreduce_ms(n)
    load = os.getloadavg()[0]
    print(f"dynamics GPT ({n:,} parameters), global batch {a.batch}, {a.steps} steps, config {a.config}; "
          f"load before/after {load:.1f}")
    print(f"| layout | step (ms) | steps/s | command wall (s) | final loss.train |")
    print(f"|---|---|---|---|---|")
    print(f"| 1 process x 2 threads | {step1:.1f} | {1e3 / step1:.1f} | {wall1:.1f} | {l1[-1]:.4f} |")
    print(f"| 2 processes x 1 thread (DDP, gloo) | {step2:.1f} | {1e3 / step2:.1f} | {wall2:.1f} | {l2[-1]:.4f} |")
    tail1, tail2 = (sum(x[-50:]) / len(x[-50:]) for x in (l1, l2))
    v1, v2 = (_series(store, n, "loss.val")[-1] for n in ("one", "two"))
    print(f"loss curves: largest relative difference over {len(l1)} steps {rel:.3f}; mean of the last 50 "
          f"training losses {tail1:.4f} vs {tail2:.4f} ({(tail2 - tail1) / tail1:+.1%}); validation loss at "
          f"step {a.steps} {v1:.4f} vs {v2:.4f} ({(v2 - v1) / v1:+.1%}). The two runs draw different batches "
          f"(DDP: half from each rank's stream), so these differences are sampling, not DDP: a single "
          f"process fed the same two streams' batches gives the DDP series exactly")
    print(f"communication: all_reduce of {n:,} floats {comm:.2f} ms = {comm / step2:.1%} of a DDP step "
          f"(upper bound: DDP overlaps it with backward)")


if __name__ == "__main__":
    main()
