"""Sweep overhead: the skip check, per-cell launch cost, and 2 workers vs 1.

    python bench/sweep_overhead.py            # ~5 minutes on 2 cores
    python bench/sweep_overhead.py --quick    # fewer cells, for a smoke check

Prints figures; asserts nothing (targets: skip check of a 1,000-cell sweep < 1 s).
Everything runs in a throw-away SQLite store in a temp dir.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
for k, v in {"MLFLOW_DISABLE_TELEMETRY": "true", "WANDB_MODE": "disabled", "LABRUN_PROGRESS": "0",
             "GIT_PYTHON_REFRESH": "quiet"}.items():
    os.environ.setdefault(k, v)


def _spec(**kw):
    from sweeps.spec import SweepSpec

    return SweepSpec.model_validate({"entry": "toy", "name": "bench", "config": "quick", **kw})


def populate(client, exp_id, cells) -> float:
    """One FINISHED run per cell, with the tags and params a real run has."""
    from mlflow.entities import Param, RunTag

    from tracking.config import flatten

    t0 = time.time()
    for c in cells:
        tags = {"labrun.task": "toy", "labrun.fingerprint": c.fingerprint, "labrun.group": c.group,
                "labrun.seed": str(c.seed), "labrun.method": c.config.method_tag,
                "labrun.condition": c.condition, "labrun.status": "exploratory"}
        run = client.create_run(exp_id, tags=tags)
        params = [Param(k, str(v)) for k, v in flatten(c.config.model_dump(mode="json")).items()]
        client.log_batch(run.info.run_id, params=params,
                         tags=[RunTag("labrun.sweep", "bench")])
        client.set_terminated(run.info.run_id, "FINISHED")
    return time.time() - t0


def bench_skip_check(n_values: int, n_seeds: int) -> None:
    from sweeps.ledger import Ledger
    from sweeps.matrix import expand
    from tracking import store
    from tracking.tasks import load_task

    schema = load_task("toy").schema
    spec = _spec(matrix={"train.lr": [round(1e-4 * (i + 1), 6) for i in range(n_values)]},
                 seeds=list(range(n_seeds)))
    t0 = time.time()
    cells = expand(spec, schema)
    t_expand = time.time() - t0
    client = store.client()
    exp_id = store.experiment_id("toy")
    print(f"populating {len(cells)} FINISHED runs ...", flush=True)
    t_pop = populate(client, exp_id, cells)
    times = []
    for _ in range(3):
        t0 = time.time()
        ledger = Ledger(client, exp_id, "toy").load([c.fingerprint for c in cells])
        skipped = sum(ledger.state(c.fingerprint).decision(1) == "done" for c in cells)
        times.append(time.time() - t0)
    assert skipped == len(cells)
    print(f"skip check: {len(cells)}-cell sweep against {len(cells)} FINISHED runs (one store query): "
          f"best {min(times):.3f} s, median {statistics.median(times):.3f} s   (target < 1 s)")
    from mlflow.entities import ViewType

    t0 = time.time()
    rows = Ledger(client, exp_id, "toy")._search_rows(ViewType)
    t_search = time.time() - t0
    assert len(rows) == len(cells)
    print(f"  the same read through the public search_runs API (the fallback for non-SQL stores, "
          f"e.g. a REST tracking server): {t_search:.3f} s")
    print(f"  expansion + fingerprints of {len(cells)} cells: {t_expand:.3f} s; "
          f"(populating took {t_pop:.1f} s)", flush=True)


def _jobs(launcher_name: str, n: int, overrides: dict, parallel: int, tag: str):
    from sweeps.launchers.base import make_launcher
    from sweeps.matrix import expand
    from sweeps.parent import open_parent
    from sweeps.sweep import cell_job
    from tracking import store
    from tracking.tasks import load_task

    task = load_task("toy")
    spec = _spec(overrides=overrides, seeds=list(range(1000, 1000 + n)))
    cells = expand(spec, task.schema)
    client = store.client()
    exp_id = store.experiment_id("bench_launch")
    parent, _ = open_parent(client, exp_id, kind="sweep", name=tag, reuse=False)
    launcher = make_launcher(launcher_name, parallel, module=task.module)
    jobs = [cell_job(c, entry="toy", module=task.module, config="quick", experiment="bench_launch",
                     experiment_id=exp_id, parent_run_id=parent, sweep_name=tag) for c in cells]
    return launcher, jobs


def bench_launch(n_local: int, n_mlflow: int) -> None:
    """Wall time per cell on a cell that does almost nothing (toy, 1 step), one at a time."""
    tiny = {"train.steps": 1, "train.eval_every": 1, "checkpoint.every": 0,
            "diagnostics.weight_norms": False}
    for name, n in (("local", n_local), ("mlflow", n_mlflow)):
        launcher, jobs = _jobs(name, n, tiny, 1, f"launch-{name}")
        walls, codes = [], []
        for job in jobs:
            t0 = time.time()
            codes.append(launcher.wait_one(job))
            walls.append(time.time() - t0)
        launcher.close()
        assert set(codes) == {0}, codes
        if name == "local":
            print(f"launch overhead, local : first cell {walls[0]:.2f} s (starts the warm fork server), "
                  f"then median {statistics.median(walls[1:]):.2f} s/cell over {n - 1} cells", flush=True)
        else:
            print(f"launch overhead, mlflow: median {statistics.median(walls):.2f} s/cell over {n} cells "
                  f"(each `mlflow run` starts python, mlflow and the task from scratch)", flush=True)


def bench_workers(n_cells: int, steps: int, threads: int | None) -> None:
    """Throughput of a CPU-bound cell with 1 and 2 worker slots (cells per minute)."""
    heavy = {"train.steps": steps, "train.eval_every": steps, "checkpoint.every": 0,
             "model.hidden": 512, "train.batch_size": 256, "data.n_train": 4096}
    rates = {}
    for parallel in (1, 2):
        launcher, jobs = _jobs("local", n_cells, heavy, parallel, f"workers-{parallel}-{threads}")
        if threads:
            for job in jobs:
                job.env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        # the fork server is already warm (bench_launch ran first): this measures cells only
        t0 = time.time()
        for job in jobs:
            launcher.submit(job)
        done = 0
        while done < len(jobs):
            done += len(launcher.poll())
            time.sleep(0.05)
        rates[parallel] = len(jobs) / (time.time() - t0) * 60
        launcher.close()
    what = f"{threads} torch thread per cell" if threads else "torch's default threads per cell"
    print(f"throughput, {n_cells} CPU-bound cells ({steps} steps, hidden 512, {what}): 1 worker "
          f"{rates[1]:.2f} cells/min, 2 workers {rates[2]:.2f} cells/min "
          f"(x{rates[2] / rates[1]:.2f}; {os.cpu_count()} cores, shared)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke check)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="labrun-bench-") as tmp:
        os.chdir(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp}/mlflow.db"
        print(f"store: {os.environ['MLFLOW_TRACKING_URI']}  (load average {os.getloadavg()[0]:.1f})")
        if args.quick:
            bench_skip_check(10, 10)
            bench_launch(3, 1)
            bench_workers(2, 50, None)
        else:
            bench_skip_check(100, 10)
            bench_launch(6, 3)
            bench_workers(4, 300, None)
            bench_workers(4, 300, 1)


if __name__ == "__main__":
    main()
