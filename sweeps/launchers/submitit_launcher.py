"""``submitit``: cells as Slurm jobs (an array job, throttled to ``parallel`` at once).

On a machine without ``sbatch`` (laptops, CI) submitit's local executor runs the same
jobs as local processes, which is how this launcher is tested. The job body is
:func:`sweeps.launchers.local.run_cell`'s logic run in the job's own process.
"""
from __future__ import annotations

import shutil
import subprocess
import time
from typing import Any

from sweeps.launchers.base import Job, Launcher


def job_body(module: str, argv: list[str], env: dict[str, str]) -> int:
    """Runs on the cluster node: the task's ``main(argv)``; returns its exit code."""
    import importlib
    import sys

    from sweeps.launchers.base import apply_env

    apply_env(env)
    sys.argv = [module, *argv]
    try:
        importlib.import_module(module).main(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        return 130
    return 0


class SubmititLauncher(Launcher):
    name = "submitit"

    def __init__(self, parallel: int = 1, *, options: Any = None, **kw: Any) -> None:
        super().__init__(parallel, **kw)
        import submitit

        from sweeps.spec import SubmititOptions

        self.opts = options or SubmititOptions()
        cluster = self.opts.cluster
        if cluster == "auto":
            cluster = "slurm" if shutil.which("sbatch") else "local"
        self.cluster = cluster
        self.executor = submitit.AutoExecutor(folder=self.opts.folder, cluster=cluster)
        params: dict[str, Any] = {"timeout_min": self.opts.timeout_min}
        if cluster == "slurm":
            params.update(slurm_array_parallelism=self.parallel, cpus_per_task=self.opts.cpus_per_task,
                          gpus_per_node=self.opts.gpus_per_node)
            if self.opts.partition:
                params["slurm_partition"] = self.opts.partition
            if self.opts.mem_gb:
                params["mem_gb"] = self.opts.mem_gb
        self.executor.update_parameters(**params)

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
        except Exception as exc:  # the job process died or was cancelled
            text = str(exc)
            return 143 if ("SIGINT" in text or "SIGTERM" in text or "cancel" in text.lower()) else 1

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
