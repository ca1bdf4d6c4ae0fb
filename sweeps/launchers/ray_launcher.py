"""``ray`` (optional, ``pip install 'labrun[ray]'``): cells as Ray tasks on a Ray cluster.

Each Ray task starts the cell as a subprocess (``python -m <module> ...``), so a crashing cell
cannot take a Ray worker down with it, and the cell dies with its worker (``PR_SET_PDEATHSIG``)
instead of writing on as an orphan. The nodes are assumed to share this checkout and its
virtualenv (one machine, or a shared filesystem, as on a Slurm cluster): the task body uses only
the standard library and is shipped by value, so a node needs nothing of labrun installed, and
the cell gets what it needs from the driver (the tracking URI and login, ``LABRUN_*``, the
checkout on ``PYTHONPATH``, the working directory), not from whatever environment ``ray start``
had on that node.

Ray does not retry a cell (``max_retries=0``): a cell whose node or worker died is reported
killed, and the sweep runs it again from its newest checkpoint, which Ray's blind re-execution
would not do.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import Any

from sweeps.launchers.base import Job, Launcher, LauncherOptions
from tracking.exits import EXIT_FAILED, EXIT_SIGTERM

# What a cell takes along from the driver's environment (the rest is the node's own).
FORWARD_PREFIXES = ("MLFLOW_", "LABRUN_", "OPTUNA_")
FORWARD_NAMES = ("PYTHONPATH", "WANDB_MODE", "GIT_PYTHON_REFRESH", "PGPASSFILE", "PGUSER")
# Ray's errors that mean the cell's process was taken away (node, worker, cancel), not that its
# code failed: reported as killed, so the sweep resumes the cell.
INTERRUPTED = ("TaskCancelledError", "WorkerCrashedError", "NodeDiedError", "LocalRayletDiedError",
               "ObjectLostError", "OwnerDiedError", "ObjectReconstructionFailedError")


@dataclass
class RayOptions(LauncherOptions):
    """The spec's ``ray:`` block."""

    address: str | None = None
    """The cluster: ``host:port`` of its head, or ``auto`` (``$RAY_ADDRESS``, else a cluster
    started on this machine); empty: a private single-machine Ray for this sweep."""
    num_cpus: float = 1.0
    """CPUs Ray reserves per cell (a cell waits for a node with that many free)."""
    num_gpus: float = 0.0
    forward_env: list[str] = field(default_factory=list)
    """More variable names to take from the driver (besides MLFLOW_*, LABRUN_*, PYTHONPATH, ...)."""
    grace_s: float = 30.0
    """After Ctrl-C, how long a cell has to end KILLED with its checkpoints before SIGKILL."""


def cell_on_node(python: str, module: str, argv: list[str], cell_env: dict[str, str], cwd: str,
                 log_path: str | None, grace_s: float) -> int:
    """The Ray task: run the cell as a subprocess on whichever node Ray picked; its exit code.

    Standard library only (shipped by value). A cancel (``KeyboardInterrupt`` here) becomes
    SIGTERM for the cell, which ends it KILLED with its checkpoints.
    """
    import os
    import signal
    import subprocess
    import sys

    def die_with_parent() -> None:  # PR_SET_PDEATHSIG: the cell goes when this worker goes
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
            except Exception:
                pass

    # The node's own MLFLOW_RUN_ID / RAY_ADDRESS are never the cell's; the cell's run (the
    # sweep's claim) comes in cell_env.
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_RUN_ID", "RAY_ADDRESS")}
    env.update(cell_env)
    exe = python if os.path.exists(python) else sys.executable
    here = cwd if os.path.isdir(cwd) else None
    out = None
    if log_path and os.path.isdir(os.path.dirname(log_path)):
        out = open(log_path, "ab")
    try:
        proc = subprocess.Popen([exe, "-m", module, *argv], env=env, cwd=here, stdout=out,
                                stderr=subprocess.STDOUT if out else None, preexec_fn=die_with_parent)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return 143
    finally:
        if out:
            out.close()


def forwarded_env(extra_names: list[str] | tuple[str, ...] = (), environ: dict[str, str] | None = None,
                  root: str | None = None) -> dict[str, str]:
    """The driver's variables a cell needs on another node, with the checkout on PYTHONPATH."""
    from tracking import env

    src = dict(os.environ if environ is None else environ)
    out = {k: v for k, v in src.items()
           if k.startswith(FORWARD_PREFIXES) or k in FORWARD_NAMES or k in extra_names}
    for var in env.LAUNCHER_ONLY:
        var.unset(out)
    env.quiet(out)
    if root:
        parts = [p for p in out.get("PYTHONPATH", "").split(os.pathsep) if p]
        out["PYTHONPATH"] = os.pathsep.join([root, *[p for p in parts if p != root]])
    return out


class RayLauncher(Launcher):
    name = "ray"
    help = "cells as Ray tasks on a Ray cluster (ray: {address: HOST:PORT}; optional: pip install 'labrun[ray]')"
    Options = RayOptions
    options: RayOptions

    def __init__(self, parallel: int = 1, options: RayOptions | None = None, *, module: str = "") -> None:
        super().__init__(parallel, options, module=module)
        try:
            import ray
        except ImportError:
            from sweeps.launchers.base import registered
            from tracking.config import ConfigError

            others = ", ".join(n for n in registered() if n != self.name)
            raise ConfigError(f"launcher 'ray' needs ray: pip install 'labrun[ray]' "
                              f"(or use launcher {others})") from None
        self.ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            self._connect()
        import ray.cloudpickle

        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # nodes need no labrun
        self.remote = ray.remote(cell_on_node).options(
            num_cpus=self.options.num_cpus, num_gpus=self.options.num_gpus, max_retries=0)
        from tracking.tasks import project_root

        self._env = forwarded_env(self.options.forward_env, root=str(project_root()))
        self._ready: list[Any] = []

    def _connect(self) -> None:
        """Join the cluster (a one-line ConfigError when there is none at that address)."""
        opts = self.options
        kwargs: dict[str, Any] = dict(ignore_reinit_error=True, log_to_driver=False,
                                      configure_logging=False)
        if opts.address:
            kwargs["address"] = opts.address
        else:  # a private Ray on this machine, with as many CPUs as the sweep runs cells
            kwargs.update(include_dashboard=False, num_cpus=max(1, int(self.parallel * opts.num_cpus)))
        try:
            self.ray.init(**kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            from tracking.config import ConfigError

            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"launcher 'ray': cannot reach a Ray cluster at "
                              f"{opts.address!r} ({reason}); start one with `ray start --head` "
                              f"or leave ray.address empty for a private one") from None

    def _start(self, job: Job) -> Any:
        cell_env = {**self._env, **job.child_env()}
        return self.remote.remote(sys.executable, job.module, job.task_argv(), cell_env, os.getcwd(),
                                  str(job.log_path) if job.log_path else None, self.options.grace_s)

    def poll(self) -> list[tuple[Job, int]]:
        # One ray.wait over every running ref per poll, not one round-trip per ref.
        self._ready = []
        if self.active:
            self._ready, _ = self.ray.wait([r for _, r in self.active.values()], timeout=0,
                                           num_returns=len(self.active))
        return super().poll()

    def _exit_code(self, job: Job, ref: Any) -> int | None:
        if ref not in self._ready:
            return None
        try:
            return int(self.ray.get(ref))
        except Exception as exc:  # the task raised, or Ray lost its worker or node
            return EXIT_SIGTERM if type(exc).__name__ in INTERRUPTED else EXIT_FAILED

    def stop(self, grace_s: float | None = None) -> list[Job]:
        """Cancel running cells (each gets SIGTERM and ends KILLED), wait for them; drop the queue."""
        import time

        dropped = self._drop_queue()
        refs = [ref for _, ref in self.active.values()]
        for ref in refs:
            self.ray.cancel(ref, force=False)
        if refs:
            wait = (self.options.grace_s if grace_s is None else grace_s) + 10
            deadline = time.time() + wait
            while time.time() < deadline:
                ready, _ = self.ray.wait(refs, timeout=1.0, num_returns=len(refs))
                if len(ready) == len(refs):
                    break
        return dropped

    def close(self) -> None:
        if self._owns and self.ray.is_initialized():
            self.ray.shutdown()
