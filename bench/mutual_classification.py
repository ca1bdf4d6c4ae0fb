"""SSMO classification bench: does imitating the peer only where it is better help?

Trains every (dataset, condition, method, seed) cell through the real ``mutual`` entry point
into a bench tracking store (cells already FINISHED there are read back, not retrained), then
reads the store with ``analysis`` and prints, per dataset and condition:

- mean ± std over seeds of each model's test accuracy under each method;
- the paired difference (same seed) of each mutual method vs ``independent``, per model,
  with its 95 % t-CI and the paired t-test's p;
- the CPU time used.

    python bench/mutual_classification.py                         # digits + mnist5k, 5 seeds
    python bench/mutual_classification.py --datasets digits --seeds 3 --epochs 10
    python bench/mutual_classification.py --store /tmp/mutual-bench  # keep / resume the store

Prints, asserts nothing. Anchor: Deep Mutual Learning (Zhang et al. 2018) reports +1 to
+2.5 points for ResNet-32 pairs on CIFAR-100 over independent training; digits and MNIST
are near their ceiling at this scale, so small differences are the expected outcome.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import diff_cells, print_table  # noqa: E402

METHODS = ("independent", "naive", "ssmo-hard", "ssmo-soft")


def _cells(args):
    for dataset in args.datasets:
        for condition in args.conditions:
            for method in METHODS:
                for seed in range(args.seeds):
                    yield dataset, condition, method, seed


def _run_cells(args) -> float:
    """Train what the store does not have yet; returns the CPU seconds this process spent."""
    from projects.mutual.train import main
    from tracking.store import client

    done = {r.info.run_name for r in client().search_runs(
        [e.experiment_id for e in client().search_experiments()], "attributes.status = 'FINISHED'",
        max_results=50_000)}
    cells = list(_cells(args))
    t0 = time.process_time()
    for i, (dataset, condition, method, seed) in enumerate(cells, 1):
        name = f"{dataset}-{condition}-{method}-s{seed}"
        if name in done:
            continue
        print(f"[{i}/{len(cells)}] {name}", file=sys.stderr, flush=True)
        main(["--config", "default", "--experiment", "mutual-bench", "--name", name, "--seed", str(seed),
              "--set", f"method.name={method}", "--set", f"condition={condition}",
              "--set", f"data.dataset={dataset}", "--set", f"train.epochs={args.epochs}",
              "--set", f"model_a.name={args.pair[0]}", "--set", f"model_b.name={args.pair[1]}",
              *sum((["--set", s] for s in args.set), [])])
    return time.process_time() - t0


def _report(args) -> None:
    from analysis.query import runs_frame

    frame = runs_frame("mutual-bench")
    frame = frame[frame["status"] == "FINISHED"]
    frame = frame[frame["run_name"].isin({f"{d}-{c}-{m}-s{s}" for d, c, m, s in _cells(args)})]
    for dataset in args.datasets:
        for condition in args.conditions:
            sub = frame[(frame["mutual.dataset"] == dataset) & (frame["labrun.condition"] == condition)]
            if sub.empty:
                continue
            cpu = sub["duration_s"].sum() / 60
            print(f"\n## {dataset}, condition {condition}: {len(sub)} runs, {cpu:.1f} run-minutes "
                  f"(A={args.pair[0]}, B={args.pair[1]}, {args.epochs} epochs)")
            _paired_table(_accuracy_table(sub))


def _accuracy_table(sub) -> dict[str, dict[str, dict]]:
    """Prints each model's test accuracy per method; returns method -> model -> seed -> accuracy."""
    from analysis.stats import describe

    acc, table = {}, []
    for method in METHODS:
        runs = sub[sub["labrun.method"] == method].sort_values("labrun.seed")
        acc[method] = {m: dict(zip(runs["labrun.seed"], runs[f"final.metric.{m}.accuracy.test"])) for m in ("a", "b")}
        cells = []
        for m in ("a", "b"):
            d = describe(list(acc[method][m].values()))
            cells.append(f"{d.mean:.4f} ± {d.std:.4f} (n={d.n})")
        table.append([method, *cells])
    print_table(table, ["method", "A test acc (mean ± std)", "B test acc (mean ± std)"])
    return acc


def _paired_table(acc: dict[str, dict[str, dict]]) -> None:
    """Each mutual method against independent, per model, over the seeds both have."""
    from analysis.stats import paired_comparison
    from analysis.tables import Footnotes

    table, notes = [], Footnotes()
    for method in METHODS[1:]:
        for m in ("a", "b"):
            seeds = sorted(set(acc[method][m]) & set(acc["independent"][m]))
            if len(seeds) < 2:
                continue
            p = paired_comparison([acc[method][m][s] for s in seeds],
                                  [acc["independent"][m][s] for s in seeds], labels=(method, "independent"))
            table.append([method, m, *diff_cells(p, notes)])
    print_table(table, ["vs independent", "model", "mean diff", "95% CI", "p"], notes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["digits", "mnist5k"])
    ap.add_argument("--conditions", nargs="+", default=["clean", "noise40", "weak_peer"])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--pair", nargs=2, default=["mlp", "cnn"], metavar=("A", "B"))
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="extra override for every cell (e.g. train.lr=0.002)")
    ap.add_argument("--store", default=None, help="folder of the bench's tracking store (default: a temp dir)")
    args = ap.parse_args()
    folder = Path(args.store or tempfile.mkdtemp(prefix="mutual-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    os.chdir(folder)
    for var, val in (("MLFLOW_DISABLE_TELEMETRY", "true"), ("WANDB_MODE", "disabled"), ("LABRUN_PROGRESS", "0")):
        os.environ.setdefault(var, val)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"
    import logging

    logging.disable(logging.INFO)
    t0 = time.time()
    cpu = _run_cells(args)
    print(f"store: {folder}; trained in {time.time() - t0:.0f} s wall, {cpu / 60:.1f} CPU-minutes "
          f"(load average {os.getloadavg()[0]:.1f})")
    _report(args)


if __name__ == "__main__":
    main()
