"""The background checkpoint writer: training hands over a snapshot and goes on.

Compressing, checksumming, writing and uploading a 120 MB state takes a few hundred
milliseconds; none of it needs the training thread once the state is a private copy
(:func:`tracking.checkpoint.snapshot`). One daemon thread per save does it.

At most one save is in flight, and a new save **waits** for the previous one rather than
coalescing with it. Coalescing (dropping the older snapshot for the newer) would lose
checkpoints the loop asked for: the retention window (``checkpoint.keep``), a ``best``
file, or the step a sweep expects to resume from would silently be missing, and the
pruning order would depend on timing. Waiting keeps every requested file and bounds memory
to one snapshot; it only costs training time when checkpoints are requested faster than
they can be written, and then training runs at the writer's pace instead of piling up
snapshots.

With ``checkpoint.snapshot=deferred`` the tensors themselves are copied here too, and the
training thread waits for that copy only at its next ``optimizer.step()`` (or the forward
of a module whose buffers are in the snapshot); :class:`tracking.checkpoint.Deferred`
says when that is safe.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from tracking.checkpoint import SaveCancelled, UnsafeCheckpoint, settle_pending
from tracking.signals import signals_held

log = logging.getLogger("labrun")

Job = Callable[[threading.Event], None]
"""A save: called on the writer thread with an event that is set when it should give up."""


class CheckpointWriter:
    """Runs one :data:`Job` at a time on a background thread; errors surface on the caller.

    A job that fails keeps its exception until :meth:`submit` or :meth:`close` raises it,
    so a broken disk fails the run at its next checkpoint (or at its end) instead of
    vanishing. A job that sees its cancel event may stop and must then leave no file.
    """

    def __init__(self, name: str = "labrun-checkpoint") -> None:
        self.name = name
        self._idle = threading.Event()
        self._idle.set()
        self._cancel = threading.Event()
        self._error: BaseException | None = None
        self.last_write_s: float | None = None
        """Wall time of the last finished job (for benchmarks and the log)."""

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    def wait(self, *, cancel_on_interrupt: bool = False) -> float:
        """Block until no save is in flight; returns the seconds waited.

        Called by the training side only: it first settles a deferred snapshot
        (:func:`tracking.checkpoint.settle_pending`), whose file waits for that verdict.
        A Ctrl-C while waiting propagates, unless ``cancel_on_interrupt``: then it asks
        the in-flight job to stop and goes on waiting (a job stops within one chunk, or
        finishes its upload), so the caller still returns with the file complete or absent.
        """
        t0 = time.perf_counter()
        settled = False
        while not (settled and self._idle.is_set()):
            try:
                if not settled:
                    settle_pending()
                    settled = True
                else:
                    self._idle.wait(0.05)
            except KeyboardInterrupt:
                if not cancel_on_interrupt:
                    raise  # the run ends KILLED; its close() still waits for this save
                self._cancel.set()
        return time.perf_counter() - t0

    def submit(self, job: Job) -> None:
        """Start ``job`` in the background; the caller must have waited (:meth:`wait`).

        It does not settle: the snapshot ``job`` writes may be a deferred one taken just now.
        """
        while not self._idle.is_set():
            self._idle.wait(0.05)
        self.raise_error()
        self._cancel.clear()
        self._idle.clear()
        thread = threading.Thread(target=self._run, args=(job,), name=self.name, daemon=True)
        with signals_held():  # an interrupt inside start() would hide a running job; it comes after
            try:
                thread.start()
            except BaseException:
                self._idle.set()  # the thread could not start: nothing is in flight
                raise

    def _run(self, job: Job) -> None:
        t0 = time.perf_counter()
        try:
            job(self._cancel)
            self.last_write_s = time.perf_counter() - t0
        except SaveCancelled:
            log.warning("labrun: an in-flight checkpoint was cancelled; no file of it was kept")
        except BaseException as exc:  # surfaced by submit()/close() on the training side
            self._error = exc
        finally:
            self._idle.set()

    def raise_error(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            if isinstance(err, UnsafeCheckpoint):  # the task's state, not the disk: said as it is
                raise err
            raise RuntimeError(f"background checkpoint save failed: {type(err).__name__}: {err}") from err

    def close(self) -> None:
        """Wait for the in-flight save (a second Ctrl-C cancels it), then report its failure."""
        self.wait(cancel_on_interrupt=True)
        self.raise_error()


__all__ = ["CheckpointWriter", "Job"]
