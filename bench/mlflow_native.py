"""What MLflow 3's system metrics and model logging cost a run (prints figures, asserts nothing).

    .venv/bin/python bench/mlflow_native.py [--repeats 3]

1. one system-metrics sample (psutil CPU/memory/disk/network, GPU when present), and the
   share of one core it takes at labrun's 10 s sampling interval;
2. toy runs (200 steps) with --system-metrics on vs off, in-process, alternating;
3. ``run.log_model``: the first call in a process (imports mlflow.pytorch) and later ones,
   for the toy MLP and a 1M-parameter MLP, with signature and input example.
A temporary SQLite store; about a CPU minute. Run on a loaded machine, the absolute times
are upper bounds: compare the on/off rows with each other, not with another machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _sample_cost(n: int = 20) -> float:
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    import mlflow

    with mlflow.start_run() as run:
        mon = SystemMetricsMonitor(run.info.run_id, sampling_interval=10)
        mon.collect_metrics()
        t0 = time.perf_counter()
        for _ in range(n):
            mon.collect_metrics()
        cost = (time.perf_counter() - t0) / n
        t0 = time.perf_counter()
        mon.publish_metrics(mon.aggregate_metrics())
        mon.mlflow_logger.flush()
        publish = time.perf_counter() - t0
    return cost, publish


def _toy(mode: str) -> float:
    from projects.toy import train as toy

    t0 = time.perf_counter()
    toy.main(["--config", "quick", "--set", "train.steps=200", "--set", "checkpoint.every=0",
              "--system-metrics", mode, "--log-model", "off"])
    return time.perf_counter() - t0


def _model_log(hidden: int, repeats: int) -> list[float]:
    import mlflow
    import torch

    from tracking.models import log_torch_model

    model = torch.nn.Sequential(torch.nn.Linear(8, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
                                torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
    times = []
    for _ in range(repeats):
        with mlflow.start_run():
            t0 = time.perf_counter()
            log_torch_model(model, torch.zeros(4, 8))
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="labrun-bench-native-"))
    os.chdir(tmp)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
    os.environ["LABRUN_PROGRESS"] = "0"
    import logging

    logging.getLogger("labrun").setLevel(logging.WARNING)
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    mlflow.set_experiment("bench")
    print(f"load: os.getloadavg() = {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    cost, publish = _sample_cost()
    print(f"system metrics: one sample {cost * 1e3:.1f} ms, one publish {publish * 1e3:.1f} ms; "
          f"at a 10 s interval {100 * (cost + publish) / 10:.3f}% of one core")
    _toy("off")  # warm imports
    on, off = [], []
    for _ in range(args.repeats):
        off.append(_toy("off"))
        on.append(_toy("on"))
    m_on, m_off = statistics.median(on), statistics.median(off)
    print(f"toy 200 steps, median of {args.repeats}: --system-metrics off {m_off:.2f} s, on {m_on:.2f} s "
          f"({100 * (m_on - m_off) / m_off:+.1f}%; runs {', '.join(f'{x:.2f}' for x in off)} / "
          f"{', '.join(f'{x:.2f}' for x in on)})")
    t0 = time.perf_counter()
    import mlflow.pytorch  # noqa: F401

    print(f"model logging: import mlflow.pytorch {time.perf_counter() - t0:.2f} s (once per process)")
    for hidden in (32, 700):
        times = _model_log(hidden, args.repeats + 1)
        n_params = 8 * hidden + hidden + hidden * hidden + hidden + hidden + 1
        print(f"  MLP {n_params:,} params: first log_model {times[0]:.2f} s, later median "
              f"{statistics.median(times[1:]):.2f} s")


if __name__ == "__main__":
    main()
