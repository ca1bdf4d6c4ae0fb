"""``local``: a pool of N worker slots on this machine, each cell in its own process.

Cells are forked from a warm *fork server* that imported mlflow, torch and the task once,
so a cell starts in a fraction of a second instead of paying ~10 s of imports, and still
runs in a process of its own: a crash or a memory blow-up kills one cell, not the sweep.
Each cell watches the launcher's pid (and asks the kernel for SIGTERM when the fork server
goes, ``PR_SET_PDEATHSIG``), so a SIGKILLed launcher leaves KILLED runs with their
checkpoints, never orphans that keep writing.
"""
from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from sweeps.launchers.base import Job, Launcher

# Imported once in the fork server; missing ones are skipped (multiprocessing ignores
# ImportError), so this list is a speed hint, not a dependency.
PRELOAD = ["__main__", "tracking.run", "tracking.checkpoint", "mlflow",
           "mlflow.store.tracking.sqlalchemy_store", "mlflow.tracking.fluent", "git", "torch",
           "torch._dynamo", "sweeps.pruning"]

_CONTEXT: Any = None


def _context(module: str) -> Any:
    """The fork-server context (one per launcher process; preloads fixed at first use)."""
    global _CONTEXT
    if _CONTEXT is None:
        import multiprocessing as mp

        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([*PRELOAD, module])
        _CONTEXT = ctx
    return _CONTEXT


def prewarm(module: str) -> None:
    """Start the fork server now, so its imports overlap with the sweep's own planning."""
    from multiprocessing import forkserver

    _context(module)
    forkserver.ensure_running()


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except Exception:
            pass


def _follow_launcher(pid: int, every_s: float = 1.0) -> None:
    """End this cell (SIGTERM -> KILLED, checkpoints kept) when the launcher is gone.

    The fork server outlives a SIGKILLed launcher while cells run (they hold its "alive"
    pipe), so the kernel's parent-death signal alone would not reach them.
    """
    import threading

    from tracking.store import process_alive

    def watch() -> None:
        while process_alive(pid):
            time.sleep(every_s)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="follow-launcher", daemon=True).start()


def run_cell(module: str, argv: list[str], env: dict[str, str], log_path: str | None,
             launcher_pid: int | None = None) -> None:
    """Body of a cell's process: the task's ``main(argv)``; exits with the task's code."""
    _die_with_parent()
    if os.getppid() == 1:  # the fork server died before we could ask to follow it
        os._exit(143)
    if launcher_pid:
        _follow_launcher(launcher_pid)
    if log_path:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    from sweeps.launchers.base import apply_env

    apply_env(env)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv = [module, *argv]
    import importlib

    code: Any = 0
    try:
        importlib.import_module(module).main(argv)
    except SystemExit as exc:
        code = exc.code if exc.code is not None else 0
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    try:  # finalizers unregister semaphores (tqdm's lock) from the shared resource tracker
        from multiprocessing import util

        util._run_finalizers(0)
        util._run_finalizers()
    except Exception:
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 1)


class LocalLauncher(Launcher):
    name = "local"

    def __init__(self, parallel: int = 1, *, module: str, **options: Any) -> None:
        super().__init__(parallel, **options)
        self.module = module

    def _start(self, job: Job) -> Any:
        proc = _context(self.module).Process(
            target=run_cell, name=f"cell-{job.key[:8]}",
            args=(job.module, job.task_argv(), job.child_env(),
                  str(job.log_path) if job.log_path else None, os.getpid()))
        proc.start()
        return proc

    def _exit_code(self, job: Job, proc: Any) -> int | None:
        if proc.exitcode is None:
            return None
        proc.join()
        return proc.exitcode

    def stop(self, grace_s: float = 30.0) -> list[Job]:
        dropped = self._drop_queue()
        for job, proc in self.active.values():
            if proc.exitcode is None and proc.pid:
                try:
                    os.kill(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.time() + grace_s
        for job, proc in self.active.values():
            proc.join(max(0.1, deadline - time.time()))
            if proc.exitcode is None:
                proc.kill()
                proc.join(5)
        return dropped

    def close(self) -> None:
        for _, proc in self.active.values():
            if proc.exitcode is None:
                proc.kill()
