"""Many workers, one sweep: 1, 2 and 3 concurrent ``labrun sweep`` processes on one spec.

    python bench/sweep_workers.py                 # ~16 minutes on 2 cores (compute-bound cells)
    python bench/sweep_workers.py --cells 4 --steps 300 --no-server   # a smoke check

Each worker is a real ``labrun sweep`` process (parallel 1) on the same spec of compute-bound
toy cells (one torch thread each), started at the same moment, first on a local SQLite store,
then through a real MLflow tracking server on 127.0.0.1 (SQLite backend, stopped by PID).
Prints, per setting: wall time, the speed-up over one worker against the ideal (the number of
cores, here 2, or the number of workers if fewer), and what the store holds afterwards: cells
FINISHED exactly once, duplicated, missing, runs left RUNNING and withdrawn claims. Asserts
nothing. Wall times depend on what else the machine runs: the load average is printed.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._common import start_server, stop_server  # noqa: E402

ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "WANDB_MODE": "disabled", "LABRUN_PROGRESS": "0",
       "GIT_PYTHON_REFRESH": "quiet", "PYTHONPATH": str(ROOT)}


def spec_text(cells: int, steps: int, experiment: str) -> str:
    import yaml

    spec = {"entry": "toy", "config": "quick", "experiment": experiment,
            "overrides": {"train.steps": steps, "train.eval_every": steps, "checkpoint.every": 0,
                          "model.hidden": 256, "train.batch_size": 256, "data.n_train": 4096},
            "matrix": {"train.lr": [round(0.001 * (i + 1), 4) for i in range(cells)]},
            "seeds": [0], "retries": 0, "parallel": 1, "launcher": "local"}
    return yaml.safe_dump(spec)


def run_workers(n: int, spec: Path, uri: str, cwd: Path) -> tuple[float, list[int]]:
    env = dict(os.environ, **ENV, MLFLOW_TRACKING_URI=uri, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.time()
    procs = [subprocess.Popen([sys.executable, "-m", "labrun", "sweep", str(spec)], cwd=cwd, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(n)]
    codes = [p.wait() for p in procs]
    return time.time() - t0, codes


def audit(uri: str, experiment: str, cells: int) -> dict[str, int]:
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=10_000)
    cellruns = [r for r in runs if r.data.tags.get("labrun.fingerprint")]
    live = [r for r in cellruns if r.info.lifecycle_stage == "active"]
    done = Counter(r.data.tags["labrun.fingerprint"] for r in live if r.info.status == "FINISHED")
    return {"once": sum(v == 1 for v in done.values()), "duplicated": sum(v > 1 for v in done.values()),
            "missing": cells - len(done), "running": sum(r.info.status == "RUNNING" for r in runs),
            "withdrawn": sum(bool(r.data.tags.get("labrun.withdrawn")) for r in cellruns),
            "workers": len({r.data.tags.get("labrun.claim") for r in live})}


def bench(label: str, uri_for, folder: Path, cells: int, steps: int, workers: list[int]) -> None:
    base = None
    for n in workers:
        experiment = f"workers-{n}"
        spec = folder / f"{experiment}.yaml"
        spec.write_text(spec_text(cells, steps, experiment))
        uri = uri_for(n)
        load0 = os.getloadavg()[0]
        wall, codes = run_workers(n, spec, uri, folder)
        a = audit(uri, experiment, cells)
        base = base or wall
        ideal = min(n, os.cpu_count() or 1)
        print(f"{label:>6} | {n} worker{'s' if n > 1 else ' '} | {wall:7.1f} s | x{base / wall:4.2f} "
              f"(ideal x{ideal}) | once {a['once']}/{cells}, duplicated {a['duplicated']}, missing "
              f"{a['missing']}, RUNNING left {a['running']}, withdrawn claims {a['withdrawn']}, workers "
              f"that ran cells {a['workers']} | exits {codes} | load {load0:.1f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=6)
    parser.add_argument("--steps", type=int, default=40000, help="training steps per cell (default 40000: ~20 s of compute, so start-up does not dominate)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--no-server", action="store_true", help="skip the tracking-server round")
    args = parser.parse_args()
    print(f"{args.cells} toy cells of {args.steps} steps (hidden 256, batch 256, 1 torch thread), "
          f"{os.cpu_count()} cores; one `labrun sweep` process per worker, parallel 1 each", flush=True)
    print(" store | workers   |    wall | speed-up        | what the store holds afterwards", flush=True)
    with tempfile.TemporaryDirectory(prefix="labrun-workers-") as tmp:
        folder = Path(tmp)
        bench("sqlite", lambda n: f"sqlite:///{folder}/local-{n}.db", folder, args.cells, args.steps,
              args.workers)
        if not args.no_server:
            proc, url = start_server(folder)
            try:
                bench("server", lambda n: url, folder, args.cells, args.steps, args.workers)
            finally:
                stop_server(proc)


if __name__ == "__main__":
    main()
