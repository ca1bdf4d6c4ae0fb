"""Full-state checkpoints: one zstd-compressed file per save, atomic, checksummed.

The state is built from each tracked object's own ``state_dict`` plus every RNG the run
touches, so a resumed run continues bit-identically on CPU. A file that fails its checksum
is reported and skipped in favour of the previous valid one, never loaded half-way.

One module per concern, in the order a save goes through them:

- :mod:`~tracking.checkpoint.state`: what a checkpoint holds (:func:`collect`, :func:`apply`);
- :mod:`~tracking.checkpoint.snapshot`: a copy training cannot change (:func:`snapshot`,
  :class:`SnapshotPool`, :class:`Deferred`);
- :mod:`~tracking.checkpoint.quantize`: optimizer moments in 8 bits;
- :mod:`~tracking.checkpoint.fileformat` and :mod:`~tracking.checkpoint.chunks`: the bytes of
  format v2 (and reading v1);
- :mod:`~tracking.checkpoint.files`: atomic :func:`save`, :func:`load`, names, the newest
  valid file;
- :mod:`~tracking.checkpoint.allowlist`: what a checkpoint may hold, so that loading one
  runs no one's code (:func:`register_safe_globals` for a task's own classes).

``from tracking import checkpoint as ckpt; ckpt.save(...)`` is how callers use it.
"""
from __future__ import annotations

from tracking.checkpoint.allowlist import (allowed_globals, is_trusted, register_safe_globals, safe_globals,
                                           trusting)
from tracking.checkpoint.errors import CheckpointError, SaveCancelled, UnsafeCheckpoint
from tracking.checkpoint.fileformat import (CHUNK, FLAG_SHUFFLE, LEVEL, LOAD_WORKERS, MAGIC, SAVE_WORKERS,
                                            VERSION, dumps, loads, write_stream)
from tracking.checkpoint.files import (checkpoint_name, file_options, latest_valid, load, periodic, save,
                                       step_of)
from tracking.checkpoint.quantize import (dequantize_optimizer_state, quantize_optimizer_state,
                                          quantize_state)
from tracking.checkpoint.snapshot import (_ACTIVE, DEFER_MIN_BYTES, Deferred, DeferredState, SnapshotPool,
                                          SnapshotTorn, byte_view, settle_pending, snapshot)
from tracking.checkpoint.state import ResumeInfo, apply, collect, rank_state, saved_world_size

__all__ = [
    "CHUNK", "DEFER_MIN_BYTES", "FLAG_SHUFFLE", "LEVEL", "LOAD_WORKERS", "MAGIC", "SAVE_WORKERS", "VERSION",
    "CheckpointError", "Deferred", "DeferredState", "ResumeInfo", "SaveCancelled", "SnapshotPool",
    "SnapshotTorn", "UnsafeCheckpoint", "allowed_globals", "apply", "byte_view", "checkpoint_name", "collect", "dequantize_optimizer_state",
    "dumps", "file_options", "is_trusted", "latest_valid", "load", "loads", "periodic", "quantize_optimizer_state",
    "quantize_state", "rank_state", "register_safe_globals", "saved_world_size", "safe_globals", "save", "settle_pending", "snapshot", "step_of",
    "trusting", "write_stream",
]
