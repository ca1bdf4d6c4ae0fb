"""SIGTERM as an exception, so that a ``kill`` (a scheduler's preemption, ``docker stop``, a
sweep stopping its cells) runs the same cleanup as Ctrl-C instead of ending the process
where it stands: a run ends KILLED with its checkpoints, a sweep stops its cells, a server
stops the process it started.
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator, NoReturn


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread. A KeyboardInterrupt, so every ``except
    KeyboardInterrupt`` written for Ctrl-C handles it too; ``str()`` is ``signal SIGTERM``."""


def raise_terminated(signum: int, frame: Any) -> NoReturn:
    """A signal handler: raise :class:`Terminated` where the main thread is."""
    raise Terminated(f"signal {signal.Signals(signum).name}")


@contextmanager
def sigterm_as_exception(then: Any = None) -> Iterator[None]:
    """Inside the block SIGTERM raises :class:`Terminated`; the previous handler is back after
    (or ``then``: a DDP rank 0 ignores the SIGTERM torchrun sends once its run is recorded,
    so its exit code still says how the run ended).

    Only the main thread can set a handler; elsewhere the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old if then is None else then)


def ignore_sigterm() -> None:
    """From here on SIGTERM does nothing (main thread only): a DDP rank 0 recording how its
    run ended, while torchrun stops the group because another rank has ended."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


@contextmanager
def signals_held() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait until the block is over (they are blocked, then delivered).

    For the few steps that must not be cut in half by :class:`Terminated`: starting a
    writer thread, whose ``Thread.start()`` an interrupt could leave with the thread
    running but the caller believing it never started (the run then ended without
    waiting for its in-flight checkpoint). A thread started inside inherits the mask, so
    signals keep going to the main thread, where Python runs its handlers anyway.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


__all__ = ["Terminated", "ignore_sigterm", "raise_terminated", "sigterm_as_exception", "signals_held"]
