"""``ray`` (optional, ``pip install 'labrun[ray]'``): cells as Ray tasks on a Ray cluster.

Each Ray task starts the cell as a subprocess (``python -m <module> ...``), so a crashing
cell cannot take a Ray worker down with it. Not exercised by the test suite (Ray is not
installed in CI); it needs ``ray.init()`` to reach a cluster or start a local one.
"""
from __future__ import annotations

import sys
from typing import Any

from sweeps.launchers.base import Job, Launcher, LauncherOptions
from tracking.exits import EXIT_FAILED


def _run_subprocess(module: str, argv: list[str], cell_env: dict[str, str]) -> int:
    """On a Ray worker: the cell as ``python -m <module>``, in the environment a launcher gives."""
    import subprocess

    from tracking import env

    return subprocess.call([sys.executable, "-m", module, *argv], env=env.child_environment(cell_env))


class RayLauncher(Launcher):
    name = "ray"
    help = "cells as Ray tasks on a Ray cluster (optional: pip install 'labrun[ray]')"

    def __init__(self, parallel: int = 1, options: LauncherOptions | None = None, *,
                 module: str = "") -> None:
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
        if not ray.is_initialized():
            ray.init(ignore_reinit_error=True, include_dashboard=False)
        self.remote = ray.remote(_run_subprocess)
        self._ready: list[Any] = []

    def _start(self, job: Job) -> Any:
        return self.remote.remote(job.module, job.task_argv(), job.child_env())

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
        except Exception:
            return EXIT_FAILED

    def stop(self, grace_s: float = 30.0) -> list[Job]:
        dropped = self._drop_queue()
        for _, ref in self.active.values():
            self.ray.cancel(ref, force=False)
        return dropped
