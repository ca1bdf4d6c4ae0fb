"""What tracking costs a training loop: no tracking vs naive mlflow.log_metric vs labrun.

Prints the per-metric cost in microseconds and the overhead on a loop whose step takes
``--step-ms`` of work. Targets: labrun >= 50x cheaper per metric than naive per-value logging
on SQLite, and < 5% overhead at 10 ms a step.

    python bench/tracking_overhead.py [--steps 300] [--metrics 20] [--step-ms 10]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time


def busy(ms: float) -> None:
    """CPU work standing in for a training step (sleep would hide contention for the GIL)."""
    end = time.perf_counter() + ms / 1000
    x = 0
    while time.perf_counter() < end:
        x += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--naive-steps", type=int, default=30, help="naive logging is slow; fewer steps")
    ap.add_argument("--metrics", type=int, default=20)
    ap.add_argument("--step-ms", type=float, default=10.0)
    args = ap.parse_args()
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    tmp = tempfile.mkdtemp(prefix="labrun-bench-")
    os.chdir(tmp)
    uri = f"sqlite:///{tmp}/mlflow.db"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    import mlflow
    from mlflow.tracking import MlflowClient

    from tracking.metrics import MetricLogger

    client = MlflowClient(uri)
    mlflow.set_tracking_uri(uri)
    exp = client.create_experiment("bench")
    names = [f"loss.part{i}" for i in range(args.metrics)]

    def loop(steps: int, log) -> float:
        t0 = time.perf_counter()
        for step in range(steps):
            busy(args.step_ms)
            log({n: step * 0.1 + i for i, n in enumerate(names)}, step)
        return time.perf_counter() - t0

    base = loop(args.steps, lambda m, s: None)

    run = client.create_run(exp)
    with mlflow.start_run(run_id=run.info.run_id):
        naive = loop(args.naive_steps,
                     lambda m, s: [mlflow.log_metric(k, v, step=s) for k, v in m.items()])

    run = client.create_run(exp)
    logger = MetricLogger(client, run.info.run_id, fast_uri=uri)
    t0 = time.perf_counter()
    ours = loop(args.steps, logger.log)
    logger.close()
    ours_total = time.perf_counter() - t0
    stored = len(client.get_metric_history(run.info.run_id, names[0]))
    assert stored == args.steps, f"lost metrics: {stored} of {args.steps}"

    per_base = base / args.steps
    n = args.metrics
    naive_us = (naive / args.naive_steps - per_base) / n * 1e6
    ours_us = (ours_total / args.steps - per_base) / n * 1e6
    print(f"loop: {args.steps} steps x {n} metrics, {args.step_ms:.0f} ms of work per step, store {uri}")
    print(f"{'mode':<28}{'per metric (us)':>16}{'overhead vs none':>18}")
    print(f"{'no tracking':<28}{0:>16.1f}{0:>17.1f}%")
    print(f"{'naive mlflow.log_metric':<28}{naive_us:>16.1f}{(naive / args.naive_steps / per_base - 1) * 100:>17.1f}%")
    print(f"{'labrun MetricLogger':<28}{ours_us:>16.1f}{(ours_total / base - 1) * 100:>17.1f}%  (incl. final flush)")
    print(f"labrun is {naive_us / max(ours_us, 1e-3):.0f}x cheaper per metric than naive logging")


if __name__ == "__main__":
    main()
