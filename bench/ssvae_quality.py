"""SSVAE quality bar: does the tau-classifier beat a classifier on the labelled pixels alone?

With 10% labels on scikit-learn digits, trains the SSVAE (the ``default`` config unless told
otherwise) through its real entry point into a throw-away tracking store, then prints the
held-out accuracy of its tau-classifier next to the floor: a logistic regression fitted on
the same labelled 10% of raw pixels and scored on the same held-out images. Also prints
k_eff (how many mixture components are really used).

    python bench/ssvae_quality.py                       # default config, seed 0
    python bench/ssvae_quality.py --seeds 0 1 2 --set train.epochs=50

The SSVAE should beat the floor; the script exits 1 when it does not (mean over seeds).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def floor_accuracy(cfg) -> float:
    """Logistic regression on the labelled raw pixels of the very split the SSVAE used."""
    from sklearn.linear_model import LogisticRegression

    from projects.ssvae.train import load_data

    s = load_data(cfg)
    clf = LogisticRegression(max_iter=5000)
    clf.fit(s.x_train[s.labelled], s.y_train[s.labelled])
    return float(clf.score(s.x_test, s.y_test))


def run_ssvae(config: str, overrides: list[str], seed: int) -> dict:
    import mlflow
    from mlflow.tracking import MlflowClient

    from projects.ssvae import train
    from tracking import resolve_config

    argv = ["--config", config, "--seed", str(seed), "--experiment", "ssvae-bench",
            "--tag", "bench=ssvae_quality"]
    for o in overrides:
        argv += ["--set", o]
    t0 = time.time()
    train.main(argv)
    elapsed = time.time() - t0
    client = MlflowClient()
    exp = client.get_experiment_by_name("ssvae-bench")
    run = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"], max_results=1)[0]
    m = run.data.metrics
    cfg = resolve_config(train.Config, config, [*overrides, f"seed={seed}"])
    while mlflow.active_run() is not None:
        mlflow.end_run()
    return {"seed": seed, "tau_acc": m.get("metric.accuracy.val", float("nan")),
            "tau_acc_train": m.get("metric.accuracy.train", float("nan")),
            "k_eff": m.get("metric.k_eff", float("nan")), "floor": floor_accuracy(cfg),
            "labelled": int(train.load_data(cfg).labelled.sum()), "seconds": elapsed,
            "run_id": run.info.run_id, "status": run.info.status}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="default", help="SSVAE config name or YAML path (default: default)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, repeatable (data.labelled_fraction stays 0.1 unless you set it)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--store", default=None,
                   help="tracking URI to keep the runs in (default: a temporary SQLite store)")
    args = p.parse_args(argv)
    for var, val in (("MLFLOW_DISABLE_TELEMETRY", "true"), ("WANDB_MODE", "disabled"), ("LABRUN_PROGRESS", "0")):
        os.environ.setdefault(var, val)
    overrides = ["data.labelled_fraction=0.1", *args.overrides]
    with tempfile.TemporaryDirectory(prefix="ssvae-bench-") as tmp:
        os.chdir(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = args.store or f"sqlite:///{tmp}/mlflow.db"
        rows = [run_ssvae(args.config, overrides, s) for s in args.seeds]
    print()
    print(f"SSVAE quality on digits, {rows[0]['labelled']} labelled training images (10%), "
          f"config={args.config} {' '.join(args.overrides)}")
    print(f"{'seed':>4} | {'tau-classifier acc':>18} | {'logreg floor acc':>16} | {'margin':>7} | "
          f"{'k_eff':>6} | {'train s':>7} | status")
    for r in rows:
        print(f"{r['seed']:>4} | {r['tau_acc']:>18.4f} | {r['floor']:>16.4f} | "
              f"{r['tau_acc'] - r['floor']:>+7.4f} | {r['k_eff']:>6.2f} | {r['seconds']:>7.1f} | {r['status']}")
    n = len(rows)
    tau = sum(r["tau_acc"] for r in rows) / n
    floor = sum(r["floor"] for r in rows) / n
    print(f"mean | {tau:>18.4f} | {floor:>16.4f} | {tau - floor:>+7.4f} | "
          f"{sum(r['k_eff'] for r in rows) / n:>6.2f} |")
    verdict = "beats" if tau > floor else "does NOT beat"
    print(f"=> the SSVAE tau-classifier {verdict} the logistic-regression floor")
    return 0 if tau > floor else 1


if __name__ == "__main__":
    raise SystemExit(main())
