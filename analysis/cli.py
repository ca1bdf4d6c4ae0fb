"""``labrun analyze`` and ``labrun export``. Light at import: the work is imported on call."""
from __future__ import annotations

import argparse
from pathlib import Path

from tracking import tags as T

ANALYZE_HELP = f"""\
Read the runs of one or more experiments from the tracking store and answer the questions
a paper asks: mean ± std over seeds, t-based and bootstrap 95% CIs, per-seed ranks with
Kendall's W (does the ranking hold from seed to seed?), paired t / Wilcoxon tests of the
winner against each other group, and learning curves with ± std bands.

When the groups differ by the method and by other axes (cells, conditions, model pairs), the
methods are compared within each setting of the other axes, as Demšar (2006) does for methods
over datasets: a blocks x methods table of means over seeds, average ranks, the Friedman test
(Iman-Davenport corrected), Nemenyi's critical difference and Holm's test against a control,
and a critical-difference diagram. --compare-by/--within choose the axes; --all-groups ranks
every group against every other instead.

Runs that are not FINISHED are left out and counted. Groups default to {T.GROUP} (the
same config without the seed), labelled by method (and condition). Everything is printed,
and logged as artifacts (table.md/.tex, ranks.md/.tex, paired.md/.tex, stats.json,
runs.csv, figures/) of an analysis run tagged {T.ANALYSIS} in the first experiment.

examples:
  labrun analyze --experiment ired --metric metric.mse.val
  labrun analyze --experiment toy --metric metric.mse.val --group-by train.optimizer train.lr
  labrun analyze --experiment toy --metric metric.mse.val --value best --filter "train.lr<0.05"
  labrun analyze --experiment ired --metric metric.mse.val --compare adversarial none
  labrun analyze -e mutual -m metric.acc --compare-by labrun.method --within labrun.condition params.problem
  labrun analyze --experiment wine --metric rmse --group-by params.alpha,params.l1_ratio --seed-key params.seed

Any experiment works, also one of an MLflow project labrun did not write: with no
{T.TASK} tags every run but the parents is read; group with --group-by params.* and pair
seeds with --seed-key.
"""

EXPORT_HELP = f"""\
Write the tidy scalar table (one row per task run, or per run of an experiment without labrun tags: ids, status, times, {T.PREFIX}* tags,
params.* and final./best./step. per metric; a stable column order) as summary.csv or
summary.parquet, and with --curves the metric histories as curves.csv (long format:
run_id, metric, step, value, timestamp) and curves.npz.

In the CSV, a text cell that starts with =, +, -, @, a tab or a carriage return and is not a
number gets a leading apostrophe ('=HYPERLINK(...)), so a spreadsheet shows it instead of
evaluating it: descriptions, tags and names are typed by users. Numbers are untouched.
Non-finite metric values are written inf, -inf and nan; a metric a run never logged is an
empty cell; a column no exported run has a value in is left out (--keep-empty-columns keeps it).
"""


def _analyze(args: argparse.Namespace) -> int:
    from analysis.report import AnalyzeOptions, analyze

    opts = AnalyzeOptions(experiments=args.experiment, metric=args.metric, direction=args.direction,
                          group_by=_keys(args.group_by), seed_key=args.seed_key, value=args.value, filters=args.filter or [],
                          compare=args.compare or [], compare_by=args.compare_by, within=_keys(args.within),
                          control=args.control, all_groups=args.all_groups,
                          confidence=args.confidence, n_boot=args.bootstrap, seed=args.seed,
                          curves=not args.no_curves, log_run=not args.no_log,
                          out_dir=Path(args.out) if args.out else None)
    result = analyze(opts)
    print(result.text)
    if result.run_id:
        print(f"\nanalysis run {result.run_id}: {', '.join(result.artifacts)}")
    if args.out:
        print(f"written to {args.out}/")
    return 0


def _keys(given: list[str] | None) -> list[str]:
    """``-g a b`` and ``-g a,b`` both mean the keys a and b."""
    return [k for item in given or [] for k in item.split(",") if k]


def _export(args: argparse.Namespace) -> int:
    from analysis.export import export

    paths = export(args.experiment, args.out, fmt=args.format, curves=args.curves, metrics=args.metric,
                   filters=args.filter or [], schema=args.schema, keep_empty=args.keep_empty_columns)
    for p in paths:
        print(p)
    return 0


def register(subparsers) -> None:
    """Add ``analyze`` and ``export`` to the ``labrun`` command."""
    fmt = argparse.RawDescriptionHelpFormatter
    p = subparsers.add_parser("analyze", help="mean ± std, CIs, significance and rank consistency over seeds",
                              description=ANALYZE_HELP, formatter_class=fmt)
    p.add_argument("--experiment", "-e", nargs="+", required=True, metavar="NAME",
                   help="experiment name(s) (or ids) to analyse together")
    p.add_argument("--metric", "-m", required=True, help="metric to compare, e.g. metric.mse.val")
    p.add_argument("--direction", choices=["min", "max"], default=None,
                   help="which way is better (default: max for accuracy-like names, else min)")
    p.add_argument("--group-by", "-g", nargs="+", metavar="KEY",
                   help=f"tags or params to group by (e.g. {T.METHOD} train.lr); default {T.GROUP}")
    p.add_argument("--seed-key", metavar="KEY",
                   help=f"the tag or param naming a run's seed (default {T.SEED}), e.g. params.seed")
    p.add_argument("--value", choices=["final", "best"], default="final",
                   help="compare each run's final value (default) or its best over the history")
    p.add_argument("--filter", "-f", action="append", metavar="EXPR",
                   help="keep runs where KEY OP VALUE holds (OP: = != < <= > >=); repeatable, ANDed")
    p.add_argument("--compare", nargs=2, metavar=("A", "B"),
                   help="paired tests of group A against group B only (labels as printed in the table)")
    p.add_argument("--compare-by", metavar="KEY",
                   help=f"the competitors (e.g. {T.METHOD}), compared within each block of --within: average "
                        "ranks, Friedman/Iman-Davenport, Nemenyi and Holm vs --control, a CD diagram")
    p.add_argument("--within", nargs="+", metavar="KEY",
                   help=f"the keys of a block (e.g. {T.CONDITION} params.model_b.name); default: what varies "
                        "within a method")
    p.add_argument("--control", metavar="NAME", help="the method Holm's test compares the others to (default: "
                                                     "the best average rank)")
    p.add_argument("--all-groups", action="store_true",
                   help="rank every group against every other instead of methods within blocks")
    p.add_argument("--confidence", type=float, default=0.95, help="confidence level of the CIs (default 0.95)")
    p.add_argument("--bootstrap", type=int, default=10_000, metavar="N", help="bootstrap resamples (default 10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    p.add_argument("--no-curves", action="store_true", help="skip reading histories for the curve figure")
    p.add_argument("--no-log", action="store_true", help="print only; create no analysis run in the store")
    p.add_argument("--out", metavar="DIR", help="also write the tables and figures to DIR")
    p.set_defaults(func=_analyze)

    p = subparsers.add_parser("export", help="write the runs table (csv/parquet) and metric histories",
                              description=EXPORT_HELP, formatter_class=fmt)
    p.add_argument("--experiment", "-e", nargs="+", required=True, metavar="NAME")
    p.add_argument("--format", choices=["csv", "parquet"], default="csv")
    p.add_argument("--out", default=".", metavar="DIR", help="output folder (default: here)")
    p.add_argument("--curves", action="store_true", help="also write curves.csv and curves.npz")
    p.add_argument("--metric", "-m", nargs="+", help="metrics for --curves (default: all logged)")
    p.add_argument("--filter", "-f", action="append", metavar="EXPR", help="as for analyze")
    p.add_argument("--schema", metavar="YAML",
                   help="a study's own columns: 'columns: {name: source column}' "
                        "(e.g. projects/mutual/export.yaml)")
    p.add_argument("--keep-empty-columns", action="store_true",
                   help="keep columns no exported run has a value in (left out by default)")
    p.set_defaults(func=_export)
