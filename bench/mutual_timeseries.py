"""SSMO long-horizon forecasting bench: DLinear vs a patched Transformer encoder (or an LSTM).

For each dataset, each method (independent, naive, ssmo-hard, ssmo-soft) and each of
``--seeds`` seeds, the pair is trained as ``projects/mutual/train.py`` trains it (``Task``,
``joint_step``, ``evaluate``; no tracking store, so no MLflow start-up per cell), and each
model's test MSE and MAE at its best validation epoch are read under every condition: clean,
temporal_shift, missing_random20, missing_block20, horizon_shift. These shifts touch the test
split only (train and validation windows are identical, which the bench checks: a condition
whose training windows differ is trained on its own), so one training per (method, seed) is
scored on every condition's test split. Printed per condition:

- mean ± std over seeds of each model's test MSE (standardised units) and MAE;
- the paired difference (same seed) of every mutual method vs ``independent``, per model,
  with its 95 % t-CI and the paired t-test's p (:mod:`analysis.stats`);
- the naive (last value) and seasonal-naive floors on the same test windows;
- the CPU seconds used.

    python bench/mutual_timeseries.py                                     # synthetic, 3 seeds
    python bench/mutual_timeseries.py --datasets co2 --config timeseries_co2 --pair dlinear lstm
    python bench/mutual_timeseries.py --epochs 5 --set series.synthetic.length=2000

Prints, asserts nothing. Anchor: DLinear (Zeng et al. 2023) is a strong linear baseline that
the Transformer forecasters of its time did not beat on ETT; seasonal-naive is the floor a
forecaster must beat to be of any use on a strongly seasonal series.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import diff_cells, print_table  # noqa: E402

METHODS = ("independent", "naive", "ssmo-hard", "ssmo-soft")
CONDITIONS = ("clean", "temporal_shift", "missing_random20", "missing_block20", "horizon_shift")


def _config(args, dataset: str, condition: str, method: str = "independent", seed: int = 0):
    from projects.mutual.config import Config
    from tracking import resolve_config

    over = [f"data.dataset={dataset}", f"condition={condition}", f"method.name={method}", f"seed={seed}",
            f"train.epochs={args.epochs}", f"method.lam={args.lam}", f"model_a.name={args.pair[0]}",
            f"model_b.name={args.pair[1]}", *args.set]
    return resolve_config(Config, args.config, over)


def _digest(data) -> str:
    """What training sees: the train and validation windows (a shift must leave them alone)."""
    h = hashlib.sha1()
    for t in (data.train.x, data.train.y, data.val.x, data.val.y):
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def _train(cfg, scored: dict[str, tuple]) -> tuple[dict, float]:
    """Train one pair; ``scored``: condition -> (task, test split). Returns condition -> model
    -> (mse, mae) on that test at the model's best validation epoch, and the CPU seconds."""
    import torch

    from projects.mutual.data.base import derived_generator
    from projects.mutual.joint import evaluate, iterate_batches, joint_step, make_optimizer
    from projects.mutual.methods import build_method
    from projects.mutual.tasks import get_task

    c0 = time.process_time()
    task = get_task("timeseries")(cfg)
    data = task.load_data()
    torch.manual_seed(derived_generator(cfg.seed, "init").initial_seed())
    a, b = task.build_models(data)
    opts = {"a": make_optimizer(a, cfg.train), "b": make_optimizer(b, cfg.train)}
    method, gen = build_method(cfg.method), derived_generator(cfg.seed, "batches")
    best = {m: math.inf for m in "ab"}
    at_best: dict[str, dict[str, tuple[float, float]]] = {c: {} for c in scored}
    n_batches = math.ceil(len(data.train) / cfg.train.batch_size)
    for epoch in range(1, cfg.train.epochs + 1):
        for i, batch in enumerate(iterate_batches(data.train, cfg.train.batch_size, gen)):
            joint_step(task, method, a, b, opts["a"], opts["b"], batch, epoch=(epoch - 1) + i / n_batches,
                       update_b=epoch <= cfg.model_b_epochs(), grad_clip=cfg.train.grad_clip)
        val = evaluate(task, {"a": a, "b": b}, data.val)
        for m, model in (("a", a), ("b", b)):
            if val[f"metric.{m}.mse.val"] < best[m]:
                best[m] = val[f"metric.{m}.mse.val"]
                for cond, (t, split) in scored.items():
                    out = evaluate(t, {m: model}, split)
                    at_best[cond][m] = (out[f"metric.{m}.mse.test"], out[f"metric.{m}.mae.test"])
    return at_best, time.process_time() - c0


def _table(condition: str, results: dict, floors: dict, names: tuple[str, str], cpu: float) -> None:
    from analysis.stats import describe, paired_comparison
    from analysis.tables import Footnotes

    seeds = sorted(results["independent"])
    print(f"\n### {condition}  (test MSE / MAE at the best val epoch, {len(seeds)} seeds; training CPU "
          f"shared by all conditions: {cpu:.0f} s)")
    print("floors on the same windows: " + ", ".join(f"{k} MSE {v['mse']:.4f} / MAE {v['mae']:.4f}"
                                                     for k, v in floors.items()))
    table = []
    for method in METHODS:
        cells = []
        for m in "ab":
            for k in (0, 1):
                d = describe([results[method][s][condition][m][k] for s in seeds])
                cells.append(f"{d.mean:.4f} ± {d.std:.4f}")
        table.append([method, *cells])
    print_table(table, ["method", "A " + names[0] + " MSE", "A MAE", "B " + names[1] + " MSE", "B MAE"])
    table, notes = [], Footnotes()
    for method in METHODS[1:]:
        for m in "ab":
            x = [results[method][s][condition][m][0] for s in seeds]
            y = [results["independent"][s][condition][m][0] for s in seeds]
            p = paired_comparison(x, y, labels=(method, "independent"))
            rel = 100 * p.mean_diff / (sum(y) / len(y))
            table.append([method, m + " " + names["ab".index(m)], *diff_cells(p, notes), f"{rel:+.1f}%"])
    print_table(table, ["MSE vs ind.", "model", "mean diff", "95% CI", "p", "% of ind."], notes)


def bench_dataset(args, dataset: str) -> float:
    from projects.mutual.tasks import get_task

    scored, groups = {}, {}
    for condition in args.conditions:
        task = get_task("timeseries")(_config(args, dataset, condition))
        data = task.load_data()
        scored[condition] = (task, data.test, data.floors["test"])
        groups.setdefault(_digest(data), []).append(condition)
    cfg0 = _config(args, dataset, "clean")
    print(f"\n## {dataset}: A={args.pair[0]}, B={args.pair[1]}, lookback {cfg0.series.lookback} -> horizon "
          f"{cfg0.series.horizon} (horizon_shift: {cfg0.series.test_horizon}), {len(data.train)} training windows, "
          f"{args.epochs} epochs, batch {cfg0.train.batch_size}, lr {cfg0.train.lr}, lam {args.lam}; "
          f"{len(groups)} distinct training set(s) over {len(args.conditions)} conditions")
    results: dict = {m: {} for m in METHODS}
    cpu = 0.0
    for method in METHODS:
        for seed in range(args.seeds):
            results[method][seed] = {}
            for conds in groups.values():
                cfg = _config(args, dataset, conds[0], method, seed)
                out, used = _train(cfg, {c: scored[c][:2] for c in conds})
                results[method][seed].update(out)
                cpu += used
                print(f"  trained {method} seed {seed} ({'/'.join(conds)}): {used:.1f} CPU s", file=sys.stderr)
    for condition in args.conditions:
        _table(condition, results, scored[condition][2], tuple(args.pair), cpu)
    return cpu


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["synthetic_series"])
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS))
    p.add_argument("--config", default="timeseries_default")
    p.add_argument("--pair", nargs=2, default=["dlinear", "patchtst"], metavar=("A", "B"))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lam", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra override for every cell")
    args = p.parse_args(argv)
    from tracking.env import quiet

    quiet()
    import torch

    torch.set_num_threads(args.threads)
    c0 = time.process_time()
    print(f"mutual_timeseries bench: {time.strftime('%Y-%m-%d %H:%M')} UTC, 2-core machine shared with other "
          f"agents (1-min load {os.getloadavg()[0]:.1f}), {args.threads} torch thread(s), config {args.config} "
          f"{' '.join(args.set)}")
    for dataset in args.datasets:
        bench_dataset(args, dataset)
    print(f"\ntotal: {(time.process_time() - c0) / 60:.1f} CPU-minutes (time.process_time of this process; "
          f"1-min load at the end {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
