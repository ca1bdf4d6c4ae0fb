"""The one small interface every launcher implements, and the job it launches.

A launcher only starts processes and reports exit codes; what a cell *is* (its config,
its parent run, its tags) is decided by the sweep or study before the job reaches it, so
a new launcher (a cluster, a cloud queue) is one class with three methods: start a job,
read a started job's exit code, stop what runs. The queue and the ``parallel`` bound live
here, once, so every launcher throttles and counts jobs the same way.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

    def all_tags(self) -> dict[str, str]:
        return {**self.tags, "labrun.job": self.key}

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
        if with_tags:
            for k, v in self.all_tags().items():
                argv += ["--tag", f"{k}={v}"]
        return argv

    def child_env(self) -> dict[str, str]:
        """Environment of the cell: quiet, nested under the sweep's parent run."""
        env = {"MLFLOW_DISABLE_TELEMETRY": "true", "WANDB_MODE": "disabled",
               "LABRUN_PARENT_RUN_ID": self.parent_run_id,
               "LABRUN_PROGRESS": os.environ.get("LABRUN_PROGRESS", "0")}
        env.update(self.env)
        return env


# The launcher's own run (``mlflow run -e sweep`` sets it) must never be adopted by a cell.
LAUNCHER_ONLY_ENV = ("MLFLOW_RUN_ID",)


def apply_env(env: dict[str, str]) -> None:
    """In a cell's process: drop the launcher's run, then set the cell's variables."""
    for key in LAUNCHER_ONLY_ENV:
        os.environ.pop(key, None)
    os.environ.update(env)


class Launcher(ABC):
    """Start jobs, report exit codes, stop what runs. ``parallel`` bounds running jobs.

    The base keeps the bookkeeping: ``queue`` holds jobs not yet started and ``active``
    maps a started job's key to ``(job, handle)``, where the handle is whatever
    :meth:`_start` returned (a process, a future, a Ray ref) and :meth:`_exit_code`
    reads back.
    """

    name = "base"

    def __init__(self, parallel: int = 1, **options: Any) -> None:
        self.parallel = max(1, int(parallel))
        self.options = options
        self.queue: deque[Job] = deque()
        self.active: dict[str, tuple[Job, Any]] = {}

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


def make_launcher(name: str, parallel: int, *, module: str, root: str | Path | None = None,
                  submitit_options: Any = None) -> Launcher:
    """Launcher by name, with a one-line error for unknown or unavailable ones."""
    from tracking.config import ConfigError

    if name == "local":
        from sweeps.launchers.local import LocalLauncher

        return LocalLauncher(parallel, module=module)
    if name == "mlflow":
        from sweeps.launchers.mlflow_run import MlflowRunLauncher

        return MlflowRunLauncher(parallel, root=root)
    if name == "submitit":
        from sweeps.launchers.submitit_launcher import SubmititLauncher

        return SubmititLauncher(parallel, options=submitit_options)
    if name == "ray":
        from sweeps.launchers.ray_launcher import RayLauncher

        return RayLauncher(parallel)
    raise ConfigError(f"unknown launcher {name!r}; valid: local, mlflow, submitit, ray")
