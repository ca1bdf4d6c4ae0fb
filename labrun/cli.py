"""The ``labrun`` command. Subcommands of other packages plug in through ``register``.

Each package with commands has a light ``<package>/cli.py`` defining
``register(subparsers)`` (it adds parsers and sets ``func``) and importing nothing heavy at
module level, so that ``labrun --help`` stays instant.
"""
from __future__ import annotations

import argparse
import typing
import importlib
import sys
from pathlib import Path
from typing import Any

from tracking import env
from tracking import tags as T

PLUGINS = ("sweeps.cli", "analysis.cli")

DESCRIPTION = """\
labrun runs ML experiments as tracked MLflow runs: provenance, resolved config, research
status, hierarchical metrics, component statuses, checkpoints and a REPORT.md for each run;
sweeps and Optuna studies over them; statistics across seeds.

Runs go to $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in this folder (MLflow's own
default, so `mlflow ui` and `labrun ui` open the same runs)."""


def _run(args: argparse.Namespace) -> int:
    from tracking.tasks import load_task

    task = load_task(args.task)
    task.main(args.rest)
    return 0


def _status(args: argparse.Namespace) -> int:
    from tracking.run import set_research_status

    set_research_status(args.run_id, args.status)
    print(f"run {args.run_id}: {T.STATUS} = {args.status}")
    return 0


def _gc(args: argparse.Namespace) -> int:
    from tracking import store
    from tracking.leftovers import gc

    uri, client = store.tracking_uri(), None
    local = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else None
    try:
        if local is None or Path(local).exists():  # never create a store just to clean up
            client = store.client()
    except Exception as exc:  # no store: the temp folders can still go, the journals stay
        print(f"labrun gc: no tracking store ({exc}); journals are kept", file=sys.stderr)
    if client is None:
        print(f"labrun gc: no tracking store at {uri}; stale runs are not closed and journals are kept "
              f"(set MLFLOW_TRACKING_URI to their store)", file=sys.stderr)
    lines = gc(client, dry_run=args.dry_run)
    print("\n".join(lines) if lines else "nothing to remove")
    return 0


def _tasks(args: argparse.Namespace) -> int:
    from tracking.tasks import entry_points, task_names

    eps = entry_points()
    tasks = set(task_names())
    for name, ep in eps.items():
        kind = "task" if name in tasks else "tool"
        print(f"{name:<10} {kind:<5} {ep.command}")
    return 0


def _ui(args: argparse.Namespace) -> int:
    from tracking.ui import main as ui_main

    return ui_main(args)


class _Version(argparse.Action):
    """``--version``, computed only when asked (it reads git)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"labrun {_version()}")
        parser.exit()


def _version() -> str:
    """The installed distribution's version, and the commit when run from a checkout."""
    from importlib import metadata

    try:
        version = metadata.version("labrun")
    except metadata.PackageNotFoundError:
        version = "unknown"
    from pathlib import Path

    from tracking.provenance import git_info

    git = git_info(Path(__file__).resolve().parent.parent)
    if git.commit != "unknown":
        version += f" (commit {git.commit[:12]}{', dirty' if git.dirty == 'true' else ''})"
    return version


REPRODUCE_HELP = """\
Run a recorded run again from its own code and say whether its numbers came back.

The run's commit is checked out in a temporary git worktree of this repository, its recorded
git.diff (uncommitted and untracked files) applied, and the same entry point run with the
run's resolved config and seed into a new run tagged labrun.reproduces=RUN_ID. On the CPU the
verdict is bit-exact (every metric series equal, or the first step and metric where they
part); elsewhere, or with --rtol/--atol, final values within |b - a| <= atol + rtol|a|
(defaults rtol 1e-5, atol 1e-8). Timing and memory metrics are left out. Exit 0 reproduced,
1 not reproduced, 2 a usage error.

  labrun reproduce RUN_ID              # the run's own commit + its diff
  labrun reproduce RUN_ID --at HEAD    # today's code, the old config: did my change alter it?
"""


def _reproduce(args: argparse.Namespace) -> int:
    from labrun.reproduce import reproduce

    verdict = reproduce(args.run_id, at=args.at, rtol=args.rtol, atol=args.atol, repo=args.repo)
    print(verdict.text())
    return 0 if verdict.reproduced else 1


def _diff(args: argparse.Namespace) -> int:
    from analysis.diff import compare, read_side, render
    from tracking.store import client

    c = client()
    print(render(compare(read_side(c, args.run_a), read_side(c, args.run_b), repo=args.repo), args.format),
          end="")
    return 0


def _check(args: argparse.Namespace) -> int:
    from labrun.check import check, log_check, render

    checks, experiment = check(args.spec, args.against, args.metric, rtol=args.rtol, atol=args.atol,
                               alpha=args.alpha, sets=args.set or [])
    text = render(checks, args.metric, experiment)
    print(text, end="")
    log_check(experiment, text, checks, args.against, args.metric)
    failed = [c for c in checks if (c.changed if args.fail_on == "change" else c.regression)]
    return 1 if failed else 0


def _provenance_parsers(sub: Any) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("reproduce", help="run a recorded run again from its commit and diff, and compare",
                       description=REPRODUCE_HELP, formatter_class=fmt)
    p.add_argument("run_id")
    p.add_argument("--at", metavar="REV", help="run this commit's code instead (e.g. HEAD) with the old config")
    p.add_argument("--rtol", type=float, default=None, help="relative tolerance on final values (off the CPU: 1e-5)")
    p.add_argument("--atol", type=float, default=None, help="absolute tolerance on final values (off the CPU: 1e-8)")
    p.add_argument("--repo", metavar="PATH", help="the git repository holding the run's commit (default: here)")
    p.set_defaults(func=_reproduce)

    p = sub.add_parser("diff", help="what differs between two runs: config, code, environment, metrics",
                       description="Compare two runs from what they recorded: resolved config (dotted keys), "
                                   "code (the commits' diff and each run's uncommitted git.diff), environment "
                                   "(packages, device, threads) and metrics (final values and the first step "
                                   "where the series part). --format md gives Markdown to paste into a PR.")
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--format", choices=["text", "md"], default="text")
    p.add_argument("--repo", metavar="PATH", help="the git repository holding both commits (default: here)")
    p.set_defaults(func=_diff)

    p = sub.add_parser("check", help="rerun a spec on today's code and test it against stored baseline runs",
                       description="Rerun SPEC (a sweep spec) into a fresh experiment and pair every group "
                                   "(same config) seed by seed with the baseline runs: equal within "
                                   "--rtol/--atol, or a paired t-test Holm-corrected across groups. Exit 1 on a "
                                   "regression (a significant change for the worse, or a change too few seeds "
                                   "cannot judge), so CI can gate on it. The baseline: an experiment name, or "
                                   "TAG=VALUE on runs of the spec's experiment (e.g. labrun.status=baseline, "
                                   "set with `labrun status RUN_ID baseline`).", formatter_class=fmt)
    p.add_argument("spec", help="sweep spec YAML (or a shipped spec name)")
    p.add_argument("--against", required=True, metavar="EXPERIMENT|TAG=VALUE")
    p.add_argument("--metric", "-m", required=True, help="the result to compare, e.g. metric.mse.val")
    p.add_argument("--rtol", type=float, default=0.0, help="relative tolerance per pair (default 0: exact)")
    p.add_argument("--atol", type=float, default=0.0, help="absolute tolerance per pair (default 0)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level after Holm (default 0.05)")
    p.add_argument("--fail-on", choices=["regression", "change"], default="regression",
                   help="exit 1 on a regression (default) or on any change beyond the tolerance")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a spec key, as for sweep")
    p.set_defaults(func=_check)


class _Parser(argparse.ArgumentParser):
    """A usage error is one line and exit 2, like every other user error of labrun; the usage
    is one ``--help`` away instead of four lines above the message."""

    def error(self, message: str) -> "typing.NoReturn":
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="labrun", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action=_Version, help="print labrun's version (and commit) and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("run", help="run a task in-process (same as python -m projects.TASK.train)",
                       description="Run TASK as one tracked run. Everything after TASK goes to the task: "
                                   "--config, --set key=value, --tag, --status, --name, --description, "
                                   "--resume RUN_ID (--trust-checkpoints: load its checkpoints without the "
                                   "allow-list; your own files only). `labrun run TASK --help` lists the "
                                   "task's config keys.")
    p.add_argument("task", help="task name (an MLproject entry point; see `labrun tasks`)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="task arguments")
    p.set_defaults(func=_run)

    p = sub.add_parser("status", help="change a run's research status",
                       description=f"Set the research status tag ({T.STATUS}) of a finished run.")
    p.add_argument("run_id")
    p.add_argument("status", choices=["exploratory", "keep", "baseline", "failed"])
    p.set_defaults(func=_status)

    _provenance_parsers(sub)

    p = sub.add_parser("gc", help="remove what SIGKILLed labrun processes left in the temp folder",
                       description="A SIGKILLed run, server or reproduce leaves its temp folder (and a run its "
                                   "metric journal). Closing a stale run (its --resume, a sweep, an optimize "
                                   "worker) removes that run's leftovers; `labrun gc` removes the rest: folders "
                                   "whose process is gone (a stale run is closed KILLED first, its log uploaded "
                                   "and its journal replayed into this store). A journal of a run in another "
                                   "store is kept and named.")
    p.add_argument("--dry-run", action="store_true", help="say what would be removed; remove nothing")
    p.set_defaults(func=_gc)

    p = sub.add_parser("tasks", help="list the MLproject entry points")
    p.set_defaults(func=_tasks)

    p = sub.add_parser("ui", help="start the MLflow UI on the default store (127.0.0.1)",
                       description="Serve the MLflow UI on this machine over the labrun store and print "
                                   "the address to open. MLflow's own log goes to a file (--verbose shows "
                                   "it); Ctrl-C or SIGTERM stops the whole server.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000, help="default 5000; 0 picks a free port and prints it")
    p.add_argument("--backend-store-uri", default=None, help="default: the labrun tracking store")
    p.add_argument("--workers", type=int, default=1,
                   help="server worker processes (default 1, one person's UI: it answers ~40%% sooner than "
                        "with MLflow's default of 4; `labrun server` is the shared, multi-worker one)")
    p.add_argument("--verbose", action="store_true", help="show MLflow's own start-up and request log")
    p.set_defaults(func=_ui)

    from tracking import server  # light: argparse only

    p = sub.add_parser("server", help="start the group's MLflow tracking server with logins "
                                      "(PostgreSQL, served artifacts, basic-auth; 127.0.0.1)")
    server.add_arguments(p)
    p.set_defaults(func=server.main)

    for name in PLUGINS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name not in (name, name.split(".")[0]):
                raise  # the plugin exists but something it needs does not
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    env.quiet()   # before any plugin or task can import mlflow (or wandb, git)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from tracking.config import EXIT_CONFIG_ERROR, ConfigError

    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"labrun {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    except Exception as exc:
        refused = _refused_by_server(exc)
        if refused is None:
            raise
        print(f"labrun {args.command}: error: {refused}", file=sys.stderr)
        return EXIT_CONFIG_ERROR


def _refused_by_server(exc: BaseException) -> str | None:
    """A tracking server's 401/403 as one line (a login problem, not a bug); else None."""
    text = str(exc)
    if type(exc).__name__ != "MlflowException" and "RestException" not in type(exc).__name__:
        return None
    for code, what in (("401", "the tracking server refused the login (HTTP 401): set MLFLOW_TRACKING_USERNAME "
                                "and MLFLOW_TRACKING_PASSWORD to a user it knows"),
                       ("403", "the tracking server says this user may not do that (HTTP 403): ask its admin "
                               "for EDIT (or MANAGE) permission on the experiment")):
        if code in text.split("\n", 1)[0] or f"status code {code}" in text or f"HTTP {code}" in text:
            return what
    return None


if __name__ == "__main__":
    raise SystemExit(main())
