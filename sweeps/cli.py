"""``labrun sweep`` and ``labrun optimize``; nothing heavy is imported until one runs.

The launcher registry is read here (for ``--help``): registering a launcher imports only
its module, never what it drives (submitit, ray).
"""
from __future__ import annotations

import argparse

SWEEP_HELP = """\
Run a matrix of cells (conditions x zip x matrix x seeds) of one task entry point.

Each cell is identified by the fingerprint of its resolved config. A cell that already has
a FINISHED run in the experiment is skipped; FAILED ones are retried up to `retries`;
KILLED ones and RUNNING ones whose process is gone (a crashed launcher) are run again,
resuming from their newest checkpoint. Interrupt at any time (Ctrl-C) and run the same
command again to finish the rest. The sweep is a parent MLflow run; its cells are children.

SPEC is a YAML file, the name of a shipped spec (sweeps/specs/NAME.yaml), or an
experiment-conditions .json file (projects/anomaly/conditions/base.json), e.g.
  labrun sweep ired_quick --dry-run
  labrun sweep sweeps/specs/ired_multiseed.yaml --parallel 2
  labrun sweep ired_quick --set seeds=[0,1] --set overrides.train.steps=50
"""

OPTIMIZE_HELP = """\
Run (or join) an Optuna study over a task's config keys. Each trial runs one child MLflow
run per seed (its value is the mean over seeds) under the study's parent run; trials are
tagged optuna.study / optuna.trial and store their MLflow run ids as user attributes.
Start the same command in several terminals or nodes on a shared storage (PostgreSQL URL)
and the workers share n_trials between them; a killed worker's trial is retried.

  labrun optimize ired_mining_optuna
  labrun optimize ired_mining_optuna --storage postgresql://root@127.0.0.1:5432/test --n-trials 40
  optuna-dashboard sqlite:///optuna.db       # watch the study in a browser
"""


def _launchers_help() -> str:
    """One line per registered launcher, for the subcommands' descriptions."""
    from sweeps.launchers.base import registered

    launchers = registered()
    width = max(map(len, launchers))
    lines = [f"  {name:<{width}}  {cls.help}" for name, cls in launchers.items()]
    options = [name for name, cls in launchers.items() if cls.Options.names()]
    note = (f"\nOptions of a launcher go under its name in the spec (e.g. {options[0]}: {{...}})."
            if options else "")
    return "launchers (spec key `launcher`, or --launcher):\n" + "\n".join(lines) + note


def _sets(args: argparse.Namespace, extra: dict[str, object]) -> list[str]:
    sets = list(args.set or [])
    for key, value in extra.items():
        if value is not None:
            sets.append(f"{key}={value}")
    return sets


def _sweep(args: argparse.Namespace) -> int:
    from sweeps.spec import SweepSpec, load_spec
    from sweeps.sweep import run_sweep
    from tracking.config import ConfigError

    if args.format and not args.dry_run:
        raise ConfigError(f"--format {args.format} is for --dry-run (the plan as a table, csv or json); "
                          f"add --dry-run or drop --format")
    spec, raw = load_spec(SweepSpec, args.spec, _sets(args, {"parallel": args.parallel,
                                                           "launcher": args.launcher,
                                                           "experiment": args.experiment}))
    return run_sweep(spec, raw, dry_run=args.dry_run, fmt=args.format or "table")


def _optimize(args: argparse.Namespace) -> int:
    from sweeps.spec import StudySpec, load_spec
    from sweeps.study import run_study

    spec, raw = load_spec(StudySpec, args.spec, _sets(args, {"n_trials": args.n_trials,
                                                           "storage": args.storage,
                                                           "name": args.study_name,
                                                           "launcher": args.launcher,
                                                           "experiment": args.experiment}))
    return run_study(spec, raw)


def register(subparsers: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    from sweeps.launchers.base import registered

    names = " | ".join(registered())
    launchers = _launchers_help()
    p = subparsers.add_parser("sweep", help="run a resumable matrix of runs from a sweep spec",
                              description=SWEEP_HELP + "\n" + launchers, formatter_class=fmt)
    p.add_argument("spec", help="sweep spec YAML (or a shipped spec name such as ired_quick)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a spec key (repeatable): parallel=2, seeds=[0,1], "
                        "overrides.train.steps=50, matrix.train.lr=[0.01,0.1]")
    p.add_argument("--dry-run", action="store_true",
                   help="print the cells and which would run, be skipped or retried; launch nothing")
    p.add_argument("--format", choices=("table", "csv", "json"),
                   help="with --dry-run: table (default; the varying keys, long values shortened), "
                        "or every cell's values in full as csv or a json array (the head line goes to stderr)")
    p.add_argument("--parallel", type=int, help="cells at once (default: the spec's parallel)")
    p.add_argument("--launcher", help=f"{names} (default: the spec's, else local)")
    p.add_argument("--experiment", help="MLflow experiment (default: the spec's, else the entry point)")
    p.set_defaults(func=_sweep)

    p = subparsers.add_parser("optimize", help="run or join an Optuna study over a task's config",
                              description=OPTIMIZE_HELP + "\n" + launchers, formatter_class=fmt)
    p.add_argument("spec", help="study spec YAML (or a shipped spec name such as ired_mining_optuna)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a spec key (repeatable): n_trials=10, seeds=[0,1], "
                        "overrides.train.steps=50, space.train.lr.high=0.5")
    p.add_argument("--n-trials", type=int, help="trials the study should reach (shared by all workers)")
    p.add_argument("--storage", help="Optuna storage URL (default: the spec's, sqlite:///optuna.db)")
    p.add_argument("--study-name", help="study name (default: the spec's name)")
    p.add_argument("--launcher", help=f"how each trial's runs start: {names} (default: the spec's, else local)")
    p.add_argument("--experiment", help="MLflow experiment (default: the spec's, else the entry point)")
    p.set_defaults(func=_optimize)
