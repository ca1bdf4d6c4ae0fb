"""The one small interface every launcher implements, and the job it launches.

A launcher only starts processes and reports exit codes; what a cell *is* (its config,
its parent run, its tags) is decided by the sweep or study before the job reaches it, so
a new launcher (a cluster, a cloud queue) is one class with four methods.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXIT_FINISHED, EXIT_FAILED, EXIT_CONFIG, EXIT_PRUNED = 0, 1, 2, 3
KILLED_CODES = {130, 143, -2, -9, -15, 137}


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
    """Start jobs, report exit codes, stop what runs. ``parallel`` bounds running jobs."""

    name = "base"

    def __init__(self, parallel: int = 1, **options: Any) -> None:
        self.parallel = max(1, int(parallel))
        self.options = options

    @abstractmethod
    def submit(self, job: Job) -> None:
        """Queue a job; it starts when a slot is free (the launcher keeps the queue)."""

    @abstractmethod
    def poll(self) -> list[tuple[Job, int]]:
        """Jobs that ended since the last call, with the task's exit code."""

    @abstractmethod
    def stop(self) -> list[Job]:
        """Interrupt running jobs (they end KILLED) and drop queued ones; returns the dropped."""

    def running(self) -> int:
        return 0

    def pending(self) -> int:
        return 0

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
