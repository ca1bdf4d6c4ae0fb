"""``submitit``: cells as Slurm jobs (an array job, throttled to ``parallel`` at once).

On a machine without ``sbatch`` (laptops, CI) submitit's local executor runs the same
jobs as local processes, which is how this launcher is tested. The job body runs the task
in the job's own process through :func:`tracking.tasks.run_entry_point`, as the local
launcher does.
"""
from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Literal

from sweeps.launchers.base import Job, Launcher, LauncherOptions, apply_env
from tracking.exits import EXIT_FAILED, EXIT_SIGTERM


@dataclass
class SubmititOptions(LauncherOptions):
    """The spec's ``submitit:`` block: one array job, one task per cell."""

    folder: str = "submitit_logs"
    """Where submitit keeps job scripts and logs."""
    cluster: Literal["auto", "slurm", "local", "debug"] = "auto"
    """'auto' is Slurm when sbatch exists, else local processes (what the tests use)."""
    timeout_min: int = 60
    partition: str | None = None
    cpus_per_task: int = 1
    gpus_per_node: int = 0
    mem_gb: float | None = None


# Job states (Slurm's, and the local executor's INTERRUPTED for a process killed by a signal)
# in which the cell was taken away rather than failing by itself: reported killed, so the sweep
# resumes it from its checkpoint (and closes its run KILLED, not FAILED).
TAKEN_AWAY = ("INTERRUPTED", "CANCELLED", "PREEMPTED", "NODE_FAIL", "TIMEOUT", "BOOT_FAIL", "DEADLINE")


def _taken_away(fut: Any, exc: Exception) -> bool:
    """Whether the job's process was killed rather than the task failing.

    A task that raises leaves a result (submitit re-raises it as FailedJobError); a process
    killed by a signal leaves none (UncompletedJobError). The local executor reports the state
    of its controller process, which exits normally when its job process is SIGKILLed, so the
    missing result is the only sign there.
    """
    text = str(exc)
    if type(exc).__name__ == "UncompletedJobError":
        return True
    if "SIGINT" in text or "SIGTERM" in text or "cancel" in text.lower():
        return True
    try:
        state = str(fut.state).upper()
    except Exception:
        return False
    return any(state.startswith(s) for s in TAKEN_AWAY)


def job_body(module: str, argv: list[str], cell_env: dict[str, str]) -> int:
    """Runs on the cluster node: the task's ``main(argv)``; returns its exit code."""
    from tracking.tasks import run_entry_point

    apply_env(cell_env)
    return run_entry_point(module, argv)


class SubmititLauncher(Launcher):
    name = "submitit"
    help = "Slurm array jobs through submitit (local processes where there is no sbatch)"
    Options = SubmititOptions
    options: SubmititOptions

    def __init__(self, parallel: int = 1, options: SubmititOptions | None = None, *,
                 module: str = "") -> None:
        super().__init__(parallel, options, module=module)
        import submitit

        opts = self.options
        cluster = opts.cluster
        if cluster == "auto":
            cluster = "slurm" if shutil.which("sbatch") else "local"
        self.cluster = cluster
        self.executor = submitit.AutoExecutor(folder=opts.folder, cluster=cluster)
        self.executor.update_parameters(**self._parameters())

    def _parameters(self) -> dict[str, Any]:
        """Executor parameters: Slurm's resources only mean something on Slurm."""
        opts = self.options
        params: dict[str, Any] = {"timeout_min": opts.timeout_min}
        if self.cluster == "slurm":
            params.update(slurm_array_parallelism=self.parallel, cpus_per_task=opts.cpus_per_task,
                          gpus_per_node=opts.gpus_per_node)
            if opts.partition:
                params["slurm_partition"] = opts.partition
            if opts.mem_gb:
                params["mem_gb"] = opts.mem_gb
        return params

    def _start(self, job: Job) -> Any:
        # Inside ``executor.batch()`` (see _fill) this returns a job submitted at the block's end.
        return self.executor.submit(job_body, job.module, job.task_argv(), job.child_env())

    def _fill(self) -> None:
        # Slurm throttles an array itself (%parallel), so everything queued goes in one
        # array; local processes are throttled here.
        limit = len(self.queue) if self.cluster == "slurm" else self.parallel - len(self.active)
        batch = [self.queue.popleft() for _ in range(min(limit, len(self.queue)))]
        if not batch:
            return
        with self.executor.batch():
            futures = [self._start(job) for job in batch]
        for job, fut in zip(batch, futures):
            self.active[job.key] = (job, fut)

    def _exit_code(self, job: Job, fut: Any) -> int | None:
        if not fut.done():
            return None
        try:
            return int(fut.result())
        except Exception as exc:  # the job's process died, or the scheduler took it away
            return EXIT_SIGTERM if _taken_away(fut, exc) else EXIT_FAILED

    def stop(self, grace_s: float = 30.0) -> list[Job]:
        dropped = self._drop_queue()
        for _, fut in self.active.values():
            try:
                fut.cancel(check=False)
            except (subprocess.SubprocessError, OSError):
                pass
        deadline = time.time() + grace_s
        while time.time() < deadline and any(not f.done() for _, f in self.active.values()):
            time.sleep(0.2)
        return dropped
