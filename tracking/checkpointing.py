"""A run's checkpoints, as Lightning's ``_CheckpointConnector`` keeps a trainer's: what they
hold, saving them in the background, pruning, a deferred snapshot found torn, and resuming
from another run (its newest valid file and the metric history up to it).

:class:`tracking.run.Run` owns one :class:`CheckpointConnector` and delegates to it; the
file format and the snapshot live in :mod:`tracking.checkpoint`.
"""
from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from tracking import checkpoint as ckpt
from tracking import store
from tracking import tags as T

if TYPE_CHECKING:
    from tracking.outcome import Outcome
    from tracking.run import Run

log = logging.getLogger("labrun")

SAVED_AT_KEY = "saved_at_ms"  # in a checkpoint's ``extra``: the wall-clock ms of the save


@dataclass
class Found:
    """The checkpoint a run resumes from, read before the run exists, or why there is none."""

    source_run: str
    name: str = ""
    state: dict | None = None
    error: ckpt.CheckpointError | None = None


def fetch(client: Any, source_run: str, *, trusted: bool | None = None) -> Found:
    """Download ``source_run``'s checkpoints and load the newest valid one.

    Called before the resuming run is created: a file the allow-list refuses raises
    :class:`~tracking.checkpoint.UnsafeCheckpoint` (naming the run and the file) and no run
    exists to be half-written. Any other reason there is nothing to resume from is kept in
    :attr:`Found.error` and raised inside the run, which then ends FAILED with it.
    """
    dest = Path(tempfile.mkdtemp(prefix="labrun-resume-"))
    try:
        try:
            client.download_artifacts(source_run, "checkpoints", str(dest))
        except Exception as exc:
            return Found(source_run, error=ckpt.CheckpointError(
                f"run {source_run} has no checkpoints to resume from ({exc})"))
        try:
            found = ckpt.latest_valid(dest / "checkpoints", trusted=trusted)
        except ckpt.UnsafeCheckpoint as exc:
            shown = f"checkpoints/{Path(exc.source).name} of run {source_run}"
            raise ckpt.UnsafeCheckpoint(shown, exc.global_name) from None
        if found is None:
            return Found(source_run, error=ckpt.CheckpointError(
                f"run {source_run} has no valid checkpoint to resume from"))
        return Found(source_run, found[0].name, found[1])
    finally:
        shutil.rmtree(dest, ignore_errors=True)


class CheckpointConnector:
    """One run's checkpoints: :meth:`restore` at the start, :meth:`track` and :meth:`save`
    while the task trains, :meth:`complete` before the run ends."""

    def __init__(self, run: "Run") -> None:
        self.run = run
        self.tracked: dict[str, Any] = {}
        self.files: list[str] = []      # periodic files uploaded and not pruned, oldest first
        self.resume: ckpt.ResumeInfo | None = None
        self._resume_state: dict | None = None
        self._writer: Any = None        # built by the first save
        self._pool: Any = None
        self._snapshot = run.cfg.checkpoint.snapshot  # "copy" after a torn deferred snapshot
        self._artifacts: Any = None

    # ------------------------------------------------------------------ resume
    def restore(self, found: Found, *, record: bool = True) -> ckpt.ResumeInfo:
        """Continue from the checkpoint :func:`fetch` read; copy the source's history
        (``record=False``: only load it, as a DDP rank other than 0 does)."""
        if found.error is not None:
            raise found.error
        run, source_run, state = self.run, found.source_run, found.state
        self.resume = ckpt.ResumeInfo(run_id=source_run, path=found.name, global_step=state["global_step"],
                                      epoch=state["epoch"], extra=state["extra"])
        self._resume_state = state
        if not record:
            return self.resume
        store.close_if_stale(run.client, source_run)  # a SIGKILLed source must not stay RUNNING
        from tracking.metrics import recover

        recover(run.client, source_run, fast_uri=store.tracking_uri())  # what a SIGKILL left unflushed
        from tracking.leftovers import clean_run

        clean_run(run.client, source_run)  # the source's temp folder, now that its files are in the store
        self._copy_history(source_run, self.resume.global_step)
        return self.resume

    def _copy_history(self, source_run: str, until_step: int) -> None:
        """The continued run carries the whole series, so it reads like an uninterrupted one."""
        client = self.run.client
        source = client.get_run(source_run)
        saved_at = (self.resume.extra or {}).get(SAVED_AT_KEY) if self.resume else None
        for key in source.data.metrics:
            if key.startswith("system/"):  # the source process's own machine samples, not its series
                continue
            history = [m for m in client.get_metric_history(source_run, key)
                       if m.step <= until_step and (saved_at is None or m.timestamp <= saved_at)]
            for m in sorted(history, key=lambda m: (m.step, m.timestamp)):
                self.run.metrics.log({key: m.value}, m.step, timestamp_ms=m.timestamp)

    def track(self, objects: Mapping[str, Any]) -> ckpt.ResumeInfo | None:
        """Register what a checkpoint holds; after :meth:`restore`, load the saved state into it."""
        self.tracked = dict(objects)
        if self._resume_state is None:
            return None
        world = self.run.world
        saved = ckpt.saved_world_size(self._resume_state)
        if saved != world.size and world.leader:
            self.run.log.warning("resuming a %d-process checkpoint with %d processes: the data order changes "
                                 "from here on (the same --nproc continues it exactly)", saved, world.size)
        ckpt.apply(self._resume_state, self.tracked, rank=world.rank, world_size=world.size)
        self._resume_state = None
        self.run.log.info("resumed from %s at global step %d (epoch %d)", self.resume.run_id,
                          self.resume.global_step, self.resume.epoch)
        return self.resume

    # ------------------------------------------------------------------ saving
    def save(self, global_step: int, *, epoch: int, extra: Mapping[str, Any] | None, best: bool) -> Path:
        """Snapshot now, write on the writer thread (:meth:`tracking.run.Run.save_checkpoint`)."""
        if not self.tracked:
            raise RuntimeError("call run.track_state(model=..., optimizer=...) before save_checkpoint")
        # When the state was taken: a resume copies only the history logged before it (what a
        # task logs after its loop, e.g. final diagnostics at step 0, is logged again anyway).
        extra = {**(extra or {}), SAVED_AT_KEY: int(time.time() * 1000)}
        world = self.run.world
        ranks = world.gather(ckpt.rank_state(self.tracked)) if world.distributed else None
        folder = self.run.local_dir / "checkpoints"
        path = folder / "best" / "best.ptz" if best else folder / ckpt.checkpoint_name(global_step)
        if not world.leader:  # its share is in rank 0's file
            return path
        writer = self._checkpoint_writer()
        writer.wait()  # one snapshot in memory at a time; its buffers are reused
        deferred = self._snapshot == "deferred"  # ckpt.Deferred
        state = ckpt.snapshot(ckpt.collect(self.tracked, global_step=global_step, epoch=epoch, extra=extra),
                              self._pool, defer=self.tracked if deferred else None)
        if ranks is not None:
            state["ranks"] = ranks
        writer.submit(lambda cancel: self._write(state, path, best, cancel))
        return path

    def _checkpoint_writer(self) -> Any:
        if self._writer is None:
            from tracking.writer import CheckpointWriter

            self._writer = CheckpointWriter(f"labrun-checkpoint-{self.run.run_id[:8]}")
            self._pool = ckpt.SnapshotPool()
        return self._writer

    def _write(self, state: dict, path: Path, best: bool, cancel: threading.Event) -> None:
        """On the writer thread: quantize (if asked), write atomically, then make it visible."""
        run, snap = self.run, state
        if run.cfg.checkpoint.quantize_moments:
            state = ckpt.quantize_state(state)
        try:
            ckpt.save(state, path, cancel=cancel)
        except ckpt.SnapshotTorn as exc:
            self._pool.give(snap)  # no file; the next (full) copy reuses these buffers
            self._torn(path, exc)
            return
        del state
        self._pool.give(snap)  # written: the next snapshot may overwrite these buffers
        # The store must hold every metric up to this step before the file is visible: a
        # resume copies that history.
        run.metrics.flush()
        if cancel.is_set():
            path.unlink(missing_ok=True)
            raise ckpt.SaveCancelled("cancelled before upload")
        run.client.log_artifact(run.run_id, str(path), "checkpoints/best" if best else "checkpoints")
        if best:
            return
        self.files.append(path.name)
        self._prune()
        run.logs.upload(run.client, run.run_id)  # a SIGKILL later still leaves the log up to here

    def _torn(self, path: Path, exc: Exception) -> None:
        """The loop changed a deferred tensor before its next step: that file cannot be
        written, but failing a long run for it would throw away the training itself. The run
        goes on with full copies, and says so in the log and a tag."""
        self._snapshot = "copy"
        log.warning("labrun: checkpoint %s skipped: %s; this run's later saves use "
                    "checkpoint.snapshot=copy (set it in the config to avoid the miss)", path.name, exc)
        self.run.set_tag(T.CHECKPOINT_TORN, f"{path.name}: {exc}"[:5000])

    def _prune(self) -> None:
        """Keep the newest ``checkpoint.keep`` files; a store that cannot delete keeps them
        (``tracking.backends.delete_artifact`` logs each refusal at debug level)."""
        from tracking import backends

        run = self.run
        keep = max(1, run.cfg.checkpoint.keep)
        while len(self.files) > keep:
            name = self.files.pop(0)
            (run.local_dir / "checkpoints" / name).unlink(missing_ok=True)
            if self._artifacts is None:  # one lookup per run, not per pruned file
                self._artifacts = run.client.get_run(run.run_id).info.artifact_uri
            backends.delete_artifact(self._artifacts, f"checkpoints/{name}")

    # ------------------------------------------------------------------ the end
    def complete(self, end: "Outcome") -> None:
        """Before the run ends: the in-flight checkpoint completes (a second Ctrl-C
        discards it instead). A save that failed fails a run that would have finished."""
        if self._writer is None:
            return
        try:
            self._writer.close()
        except Exception as err:
            if not isinstance(err, ckpt.UnsafeCheckpoint):  # that one says it all, once, at the end
                print(f"labrun: could not complete the in-flight checkpoint for run {self.run.run_id}: {err}",
                      file=sys.stderr)
            if end.status == "FINISHED" and end.exc is None:
                failed = type(end).of(err)
                end.status, end.failure, end.exit_code, end.exc = failed.status, failed.failure, \
                    failed.exit_code, err


__all__ = ["CheckpointConnector", "Found", "SAVED_AT_KEY", "fetch"]
