"""How analysis scales with the number of runs: labrun's bulk reader vs the naive path.

For each size, an SQLite store with N runs x 10 metrics x 20 params is built in bulk
(``analysis.synthetic``), then in one process:

- naive: ``mlflow.search_runs(...)`` (MLflow's DataFrame of every run) + a pandas groupby
  giving mean / std / count per ``labrun.group``;
- labrun: ``runs_frame`` (bulk SQL over runs/tags/params/latest_metrics, plus the history
  scan for ``best``) + selection of FINISHED runs + grouping + statistics (mean, std, sem,
  t CI, seeded bootstrap CI) + per-seed ranks and Kendall's W of the methods.

Prints one line per size and the speed-up. Usage::

    python bench/analysis_scale.py                 # 1k and 10k runs
    python bench/analysis_scale.py --with-50k      # also 50k (a few minutes to build)
    python bench/analysis_scale.py --sizes 2000
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("LABRUN_PROGRESS", "0")

METRIC = "metric.m00.val"


def naive(uri: str, exp_id: str):
    import mlflow

    mlflow.set_tracking_uri(uri)
    df = mlflow.search_runs(experiment_ids=[exp_id], max_results=100_000)
    df = df[df["status"] == "FINISHED"]
    return df.groupby("tags.labrun.group")[f"metrics.{METRIC}"].agg(["mean", "std", "count"])


def labrun(uri: str):
    from analysis import query, ranking, selection, stats

    frame = query.runs_frame("bench", metrics=[METRIC], tracking_uri=uri)
    runs, excluded = selection.select(frame, f"final.{METRIC}", METRIC, "bench")
    runs = runs.assign(group=runs["labrun.group"])
    table = stats.group_stats(runs, f"final.{METRIC}", "group")
    ranks = ranking.rank_methods(runs, f"final.{METRIC}", item="labrun.method", block="labrun.seed")
    return frame, table, ranks


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000])
    p.add_argument("--with-50k", action="store_true", help="add a 50,000-run store")
    p.add_argument("--steps", type=int, default=1, help="history length of each metric (default 1)")
    args = p.parse_args(argv)
    sizes = args.sizes + ([50_000] if args.with_50k else [])

    from analysis import synthetic

    with tempfile.TemporaryDirectory(prefix="labrun-bench-") as tmp:
        os.chdir(tmp)
        # warm-up on a tiny store: imports and first connections are not what is measured
        warm = synthetic.sqlite_store(Path(tmp) / "warm.db", tmp)
        naive(warm, synthetic.build_store(warm, "bench", 40, n_metrics=10, n_params=20))
        labrun(warm)
        print(f"{'runs':>7} {'build s':>8} {'naive s':>8} {'labrun s':>9} {'speed-up':>9}  check")
        for n in sizes:
            db = Path(tmp) / f"bench{n}.db"
            uri = synthetic.sqlite_store(db, tmp)
            t0 = time.perf_counter()
            exp_id = synthetic.build_store(uri, "bench", n, n_metrics=10, n_params=20, steps=args.steps,
                                           failed_every=100)
            build = time.perf_counter() - t0
            t0 = time.perf_counter()
            ref = naive(uri, exp_id)
            t_naive = time.perf_counter() - t0
            t0 = time.perf_counter()
            frame, table, ranks = labrun(uri)
            t_labrun = time.perf_counter() - t0
            same = table.set_index("group")[["mean", "std", "n"]].sort_index()
            ok = (len(frame) == n and (same["n"].to_numpy() == ref.sort_index()["count"].to_numpy()).all()
                  and abs(same["mean"].to_numpy() - ref.sort_index()["mean"].to_numpy()).max() < 1e-9)
            print(f"{n:>7} {build:>8.2f} {t_naive:>8.2f} {t_labrun:>9.2f} {t_naive / t_labrun:>8.1f}x  "
                  f"{'same groups and means' if ok else 'MISMATCH'}; {len(table)} groups, "
                  f"Kendall's W of {ranks.n_methods} methods over {ranks.n_seeds} seeds = {ranks.kendall_w:.3f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
