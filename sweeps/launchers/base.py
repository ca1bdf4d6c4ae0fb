"""The one small interface every launcher implements, the job it launches, and the registry.

A launcher only starts processes and reports exit codes; what a cell *is* (its config,
its parent run, its tags) is decided by the sweep or study before the job reaches it, so
a new launcher (a cluster, a cloud queue) is one class with three methods: start a job,
read a started job's exit code, stop what runs. The queue and the ``parallel`` bound live
here, once, so every launcher throttles and counts jobs the same way.

Launchers are declared as entry points (group ``labrun.launchers``: labrun's own in its
pyproject.toml, another package's in its own) and loaded on first use; a subclass with a
``name`` also registers itself when defined. Specs, ``--help`` and :func:`make_launcher` all
read that registry, so a launcher's name, one-line help and options schema are declared
once, on the class. Registering never imports what the launcher drives (submitit, ray):
those are imported when a launcher is built.
"""
from __future__ import annotations

import dataclasses
import os
import sys
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

from tracking import env
from tracking import tags as T
from tracking.exits import EXIT_CONFIG, EXIT_FINISHED, EXIT_PRUNED, EXIT_SIGINT, EXIT_SIGTERM

# Negative codes: killed by that signal before Python could turn it into KILLED; 137 = shell SIGKILL.
KILLED_CODES = {EXIT_SIGINT, EXIT_SIGTERM, -2, -9, -15, 137}


def outcome_of(code: int | None) -> str:
    """A task's exit code -> finished | failed | config | pruned | killed."""
    if code == EXIT_FINISHED:
        return "finished"
    if code == EXIT_PRUNED:
        return "pruned"
    if code == EXIT_CONFIG:
        return "config"
    if code in KILLED_CODES:
        return "killed"
    return "failed"


@dataclass
class Job:
    """One attempt at one cell: everything needed to start the task's entry point."""

    key: str
    """Unique per attempt; tagged ``labrun.job`` so the run can be found afterwards."""
    entry: str
    module: str
    config: str | None
    overrides: list[str]
    experiment: str
    experiment_id: str
    parent_run_id: str
    run_name: str
    tags: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    resume: str | None = None
    log_path: Path | None = None
    cell: Any = None
    attempt: int = 1
    run_id: str | None = None
    """Known up front when the launcher pre-creates the run (mlflow launcher)."""
    nproc: int = 1
    """Processes of the cell's one run (torchrun/DDP, ``--nproc``): the launcher's ``nproc_per_node``."""

    def all_tags(self) -> dict[str, str]:
        return {**self.tags, T.JOB: self.key}

    def task_argv(self, *, with_tags: bool = True) -> list[str]:
        """The task's own argv (what ``python -m <module>`` would get)."""
        argv: list[str] = []
        if self.config is not None:
            argv += ["--config", self.config]
        for item in self.overrides:
            argv += ["--set", item]
        if self.resume:
            argv += ["--resume", self.resume]
        argv += ["--experiment", self.experiment, "--name", self.run_name]
        if self.nproc > 1:
            argv += ["--nproc", str(self.nproc)]
        if with_tags:
            for k, v in self.all_tags().items():
                argv += ["--tag", f"{k}={v}"]
        return argv

    def child_env(self) -> dict[str, str]:
        """What the cell's process gets on top of the launcher's environment.

        Quiet (no telemetry), nested under the sweep's parent run, and without progress bars
        unless the user asked for them: cells run in parallel and write to log files.
        """
        extra = dict(env.QUIET)
        env.LABRUN_PARENT_RUN_ID.set(self.parent_run_id, extra)
        bars = env.LABRUN_PROGRESS.get() if env.LABRUN_PROGRESS.is_set() else False
        env.LABRUN_PROGRESS.set(bool(bars), extra)
        extra.update(self.env)
        return extra

    def tail(self, n: int = 6) -> str:
        """The last lines of the cell's process log, indented, for a failure message."""
        if not self.log_path or not self.log_path.exists():
            return ""
        lines = self.log_path.read_text(errors="replace").strip().splitlines()[-n:]
        return "\n".join("      " + line for line in lines)


def apply_env(cell_env: Mapping[str, str], *, complete: bool = False) -> None:
    """In a cell's own process (forked, or a cluster job): the environment a fresh child gets.

    The launcher's own run (``mlflow run -e sweep`` sets ``MLFLOW_RUN_ID``) must never be
    adopted by a cell, so this drops it rather than only adding the cell's variables.
    ``complete``: ``cell_env`` is the whole environment (the launcher's, as
    :func:`tracking.env.child_environment` made it) and replaces this process's; a cell forked
    from the local fork server needs that, because the server's environment is the one it was
    started with, maybe a sweep ago (another ``MLFLOW_TRACKING_URI`` in the same Python process).
    """
    fresh = dict(cell_env) if complete else env.child_environment(cell_env)
    for key in set(os.environ) - set(fresh):
        del os.environ[key]
    os.environ.update(fresh)


@dataclass
class LauncherOptions:
    """A launcher's options: the spec's block under its name (``submitit: {...}``); every
    launcher takes ``nproc_per_node``.

    A plain dataclass, so that registering a launcher imports nothing (``labrun --help``
    reads the registry); pydantic validates it, strictly, when a spec is loaded.
    """

    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}

    nproc_per_node: int = 1
    """Processes per cell: each cell is one run on that many processes (torchrun and DDP,
    the task's ``--nproc``); ledger, claims and resume are the same as for one process."""

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


class Launcher(ABC):
    """Start jobs, report exit codes, stop what runs. ``parallel`` bounds running jobs.

    The base keeps the bookkeeping: ``queue`` holds jobs not yet started and ``active``
    maps a started job's key to ``(job, handle)``, where the handle is whatever
    :meth:`_start` returned (a process, a future, a Ray ref) and :meth:`_exit_code`
    reads back. A subclass sets ``name`` (how specs pick it), ``help`` (one line for
    ``--help``) and, if it takes any, ``Options`` (its spec block, validated before any run).
    """

    name: ClassVar[str] = ""
    help: ClassVar[str] = ""
    Options: ClassVar[type[LauncherOptions]] = LauncherOptions

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            _register(cls)

    def __init__(self, parallel: int = 1, options: LauncherOptions | Mapping[str, Any] | None = None, *,
                 module: str = "") -> None:
        self.parallel = max(1, int(parallel))
        self.options = self.parse_options(options)
        self.module = module  # the task's module (projects.toy.train): what a launcher may import ahead
        self.queue: deque[Job] = deque()
        self.active: dict[str, tuple[Job, Any]] = {}

    @classmethod
    def parse_options(cls, raw: LauncherOptions | Mapping[str, Any] | None) -> LauncherOptions:
        """Options from a spec block (or already parsed); a bad one is a one-line ConfigError."""
        if isinstance(raw, cls.Options):
            return raw
        from pydantic import TypeAdapter

        try:
            options = TypeAdapter(cls.Options).validate_python(dict(raw or {}))
        except (TypeError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
            from tracking.config import ConfigError

            raise ConfigError(_options_error(cls, exc)) from None
        if options.nproc_per_node < 1:
            from tracking.config import ConfigError

            raise ConfigError(f"launcher {cls.name!r}: nproc_per_node must be >= 1, got {options.nproc_per_node}")
        return options

    def claim_tags(self, job: Job) -> dict[str, str]:
        """Tags of the run a sweep creates for ``job`` before launching it (sweeps/claims.py)
        that only this launcher knows, e.g. ``mlflow.source.type``; the task adopts that run."""
        return {}

    @classmethod
    def prewarm(cls, module: str) -> None:
        """Called before a sweep plans, so slow start-up (a fork server) overlaps planning."""

    @abstractmethod
    def _start(self, job: Job) -> Any:
        """Start one job now; the handle returned is kept in ``active`` until it ends."""

    @abstractmethod
    def _exit_code(self, job: Job, handle: Any) -> int | None:
        """The task's exit code once the job has ended, ``None`` while it still runs."""

    @abstractmethod
    def stop(self) -> list[Job]:
        """Interrupt running jobs (they end KILLED) and drop queued ones; returns the dropped."""

    def submit(self, job: Job) -> None:
        """Queue a job; it starts when a slot is free (the launcher keeps the queue)."""
        job.nproc = self.options.nproc_per_node
        self.queue.append(job)
        self._fill()

    def _fill(self) -> None:
        """Start queued jobs while fewer than ``parallel`` run."""
        while self.queue and len(self.active) < self.parallel:
            job = self.queue.popleft()
            self.active[job.key] = (job, self._start(job))

    def poll(self) -> list[tuple[Job, int]]:
        """Jobs that ended since the last call, with the task's exit code.

        Ended jobs free their slots, so queued ones start before this returns.
        """
        done = []
        for key, (job, handle) in list(self.active.items()):
            code = self._exit_code(job, handle)
            if code is not None:
                done.append((job, code))
                del self.active[key]
        self._fill()
        return done

    def _drop_queue(self) -> list[Job]:
        """Empty the queue (first step of every ``stop``), so nothing new starts; returns it."""
        dropped = list(self.queue)
        self.queue.clear()
        return dropped

    def running(self) -> int:
        return len(self.active)

    def pending(self) -> int:
        return len(self.queue)

    def close(self) -> None:
        """Release workers (process pools, clusters)."""

    def wait_one(self, job: Job, poll_s: float = 0.1) -> int:
        """Run one job to its end (studies run trials' seeds this way)."""
        import time

        self.submit(job)
        while True:
            for done, code in self.poll():
                if done is job:
                    return code
            time.sleep(poll_s)


def _options_error(cls: type[Launcher], exc: Exception) -> str:
    valid = ", ".join(cls.Options.names()) or "none"
    if not hasattr(exc, "errors"):
        return f"launcher {cls.name!r}: options must be a mapping of {valid} (got {exc})"
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"launcher {cls.name!r}: unknown option {key!r}; valid: {valid}"
    return f"launcher {cls.name!r}: {key}: {err['msg']} (got {err.get('input')!r})"


# --------------------------------------------------------------------------- the registry

GROUP = "labrun.launchers"
"""The entry-point group that declares launchers: labrun's own in its pyproject.toml, any
other installed package's in its own metadata, so a launcher is added without touching labrun."""

_REGISTRY: dict[str, type[Launcher]] = {}
_DECLARED: dict[tuple[str, ...], list[tuple[str, str]]] = {}  # by sys.path: a dist put on it is seen
_UNLOADABLE: set[tuple[str, str]] = set()  # warned about once


def _register(cls: type[Launcher]) -> None:
    known = _REGISTRY.get(cls.name)
    if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"launcher name {cls.name!r} is taken by {known.__module__}.{known.__qualname__}")
    _REGISTRY[cls.name] = cls


def declared() -> list[tuple[str, str]]:
    """``(name, "module:Class")`` of every launcher entry point, labrun's own first.

    Run from a checkout, the checkout's pyproject.toml is read as well: the installed metadata
    may be older than the checkout, or missing (``mlflow run`` with a virtualenv runs the
    checkout uninstalled). The first declaration of a name wins.
    """
    key = tuple(sys.path)
    if key not in _DECLARED:
        from importlib.metadata import entry_points

        installed = sorted(entry_points(group=GROUP), key=lambda ep: getattr(ep.dist, "name", "") != "labrun")
        found: dict[str, str] = {}
        for name, value in _checkout_entry_points() + [(ep.name, ep.value) for ep in installed]:
            found.setdefault(name, value)
        _DECLARED.clear()
        _DECLARED[key] = list(found.items())
    return _DECLARED[key]


def _checkout_entry_points() -> list[tuple[str, str]]:
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    if not pyproject.is_file():
        return []
    try:
        import tomllib
    except ImportError:  # Python 3.10: the installed metadata alone
        return []
    project = tomllib.loads(pyproject.read_text()).get("project", {})
    if project.get("name") != "labrun":
        return []
    return list(project.get("entry-points", {}).get(GROUP, {}).items())


def _load(name: str, value: str) -> None:
    """Import a declared launcher (its class registers itself); a broken one is skipped, once
    said, so that one bad package does not stop every sweep."""
    from importlib.metadata import EntryPoint

    try:
        cls = EntryPoint(name, value, GROUP).load()
        if not (isinstance(cls, type) and issubclass(cls, Launcher) and cls.name == name):
            raise TypeError(f"{value} is not a Launcher subclass with name = {name!r}")
        _register(cls)
    except Exception as exc:
        if (name, value) not in _UNLOADABLE:
            _UNLOADABLE.add((name, value))
            import warnings

            warnings.warn(f"launcher {name!r} ({value}) cannot be loaded: {exc}", stacklevel=3)


def registered() -> dict[str, type[Launcher]]:
    """Every launcher by name: the declared ones in declaration order, then those defined in
    code without a declaration (a subclass with a ``name`` registers itself when defined)."""
    entries = declared()
    for name, value in entries:
        if name not in _REGISTRY and (name, value) not in _UNLOADABLE:
            _load(name, value)
    order = {name: i for i, (name, _) in enumerate(entries)}
    ranked = sorted(_REGISTRY.values(), key=lambda c: order.get(c.name, len(order)))
    return {c.name: c for c in ranked}


def launcher_class(name: str) -> type[Launcher]:
    """The launcher registered as ``name``; an unknown one is a one-line ConfigError (exit 2)."""
    launchers = registered()
    if name not in launchers:
        from tracking.config import ConfigError

        raise ConfigError(unknown_launcher(name, launchers))
    return launchers[name]


def unknown_launcher(name: str, launchers: Mapping[str, Any] | None = None) -> str:
    """The one-line error for a launcher name nobody registered (specs raise it too)."""
    return f"unknown launcher {name!r}; valid: {', '.join(launchers or registered())}"


def make_launcher(name: str, parallel: int, *, module: str,
                  options: LauncherOptions | Mapping[str, Any] | None = None) -> Launcher:
    """The launcher ``name`` with ``parallel`` slots for cells of the task ``module``."""
    return launcher_class(name)(parallel, options, module=module)
