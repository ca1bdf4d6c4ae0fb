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

from sweeps.launchers.base import Job, Launcher, apply_env
from tracking.env import child_environment
from tracking.exits import EXIT_SIGTERM

# Imported once in the fork server; missing ones are skipped (multiprocessing ignores
# ImportError), so this list is a speed hint, not a dependency.
PRELOAD = ["__main__", "tracking.run", "tracking.checkpoint", "tracking.tasks", "mlflow",
           "mlflow.store.tracking.sqlalchemy_store", "mlflow.tracking.fluent", "git", "torch",
           "torch._dynamo", "sweeps.pruning"]

_CONTEXT: Any = None


def _context(module: str) -> Any:
    """The fork-server context (one per launcher process; preloads fixed at first use)."""
    global _CONTEXT
    if _CONTEXT is None:
        import multiprocessing as mp

        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([*PRELOAD, module] if module else PRELOAD)
        _CONTEXT = ctx
    return _CONTEXT


def start_fork_server(module: str) -> None:
    """Start the fork server now, so its imports overlap with the sweep's own planning."""
    from multiprocessing import forkserver

    _context(module)
    forkserver.ensure_running()


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when our parent dies (Linux), so no cell outlives its launcher.

    For any launcher that starts cells as child processes (``preexec_fn`` of a ``Popen``).
    """
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


def run_cell(module: str, argv: list[str], cell_env: dict[str, str], log_path: str | None,
             launcher_pid: int | None = None) -> None:
    """Body of a cell's process: the task's ``main(argv)``; exits with the task's code.

    ``cell_env`` is the launcher's whole environment at submission, not the fork server's."""
    die_with_parent()
    if os.getppid() == 1:  # the fork server died before we could ask to follow it
        os._exit(EXIT_SIGTERM)
    if launcher_pid:
        _follow_launcher(launcher_pid)
    if log_path:
        _redirect_output(log_path)
    apply_env(cell_env, complete=True)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from tracking.tasks import run_entry_point

    code = run_entry_point(module, argv)
    _release_shared_resources()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # no interpreter teardown: the fork server's inherited state is not ours to clean


def _redirect_output(log_path: str) -> None:
    """stdout and stderr (file descriptors, so child processes' output too) into the cell's log."""
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _release_shared_resources() -> None:
    """Run multiprocessing's finalizers, which ``os._exit`` skips: they unregister semaphores
    (tqdm's lock) from the resource tracker shared with the fork server."""
    try:
        from multiprocessing import util

        util._run_finalizers(0)
        util._run_finalizers()
    except Exception:
        pass


class LocalLauncher(Launcher):
    name = "local"
    help = "N processes on this machine, forked from a warm fork server (the default)"

    @classmethod
    def prewarm(cls, module: str) -> None:
        start_fork_server(module)

    def _start(self, job: Job) -> Any:
        proc = _context(self.module).Process(
            target=run_cell, name=f"cell-{job.key[:8]}",
            args=(job.module, job.task_argv(), child_environment(job.child_env()),
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
