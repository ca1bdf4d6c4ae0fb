"""The ``labrun`` command. Subcommands of other packages plug in through ``register``.

Each package with commands has a light ``<package>/cli.py`` defining
``register(subparsers)`` (it adds parsers and sets ``func``) and importing nothing heavy at
module level, so that ``labrun --help`` stays instant.
"""
from __future__ import annotations

import argparse
import importlib
import sys

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


def _tasks(args: argparse.Namespace) -> int:
    from tracking.tasks import entry_points, task_names

    eps = entry_points()
    tasks = set(task_names())
    for name, ep in eps.items():
        kind = "task" if name in tasks else "tool"
        print(f"{name:<10} {kind:<5} {ep.command}")
    return 0


def _ui(args: argparse.Namespace) -> int:
    import subprocess

    from tracking.store import quiet_environment, tracking_uri

    if args.workers < 1:
        print(f"labrun ui: --workers must be at least 1 (got {args.workers})", file=sys.stderr)
        return 2
    quiet_environment()
    uri = args.backend_store_uri or tracking_uri()
    url = f"http://{args.host}:{args.port}"
    print(f"MLflow UI on {uri}\n  open {url}   (Ctrl-C stops it)", flush=True)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
           "--host", args.host, "--port", str(args.port), "--workers", str(args.workers)]
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labrun", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

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

    p = sub.add_parser("tasks", help="list the MLproject entry points")
    p.set_defaults(func=_tasks)

    p = sub.add_parser("ui", help="start the MLflow UI on the default store (127.0.0.1)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--backend-store-uri", default=None, help="default: the labrun tracking store")
    p.add_argument("--workers", type=int, default=1,
                   help="server worker processes (default 1, one person's UI: it answers ~40%% sooner than "
                        "with MLflow's default of 4; `labrun server` is the shared, multi-worker one)")
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
