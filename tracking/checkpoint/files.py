"""Checkpoint files on disk: written atomically, read back checked, named by step, and
the newest valid one found among a run's files."""
from __future__ import annotations

import logging
import os
import re
import threading
from pathlib import Path
from typing import Any, Mapping

from tracking.checkpoint.errors import CheckpointError, UnsafeCheckpoint
from tracking.checkpoint.fileformat import (HEADER_V2, LEVEL, LOAD_WORKERS, MAGIC, PREFIX, SAVE_WORKERS,
                                            decode, loads, read_index, write_stream)

_NAME = re.compile(r"^cp_(\d+)\.ptz$")
log = logging.getLogger("tracking.checkpoint")


def checkpoint_name(global_step: int) -> str:
    return f"cp_{int(global_step)}.ptz"


def save(state: Mapping[str, Any], path: str | Path, *, level: int = LEVEL, shuffle: bool = True,
         workers: int = SAVE_WORKERS, cancel: threading.Event | None = None, fsync: bool = False) -> Path:
    """Write atomically: a crash mid-write leaves the previous file set untouched.

    The file is written under a temporary name and renamed when complete, so a killed
    process leaves either no file or a whole one (the page cache outlives the process).
    ``fsync`` is off by default: it cost ~90 ms per 120 MB here, and what a resume reads is
    the artifact store's copy, which MLflow does not fsync either; after a power loss a
    torn file fails its checksum and the previous one is used. A cancelled or failed save
    removes its temporary file, and so does a deferred snapshot found torn (:class:`Deferred`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as fh:
            write_stream(state, fh, level=level, shuffle=shuffle, workers=workers, cancel=cancel, source=str(path))
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
        if getattr(state, "deferred", None) is not None:
            state.deferred.confirm(cancel)   # a torn deferred snapshot never becomes a file
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load(path: str | Path, *, workers: int = LOAD_WORKERS, trusted: bool | None = None) -> dict:
    """Read a file; v2 files stream chunk by chunk (``os.preadv`` into per-thread buffers),
    never holding the whole compressed file in memory. Only allow-listed globals load
    (:mod:`~tracking.checkpoint.allowlist`; ``trusted=True`` lifts that for a file you trust)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, HEADER_V2.size, 0)
        if len(head) < PREFIX.size or PREFIX.unpack_from(head) != (MAGIC, 2):
            return loads(Path(path).read_bytes(), source=str(path), workers=workers, trusted=trusted)

        def read_into(offset: int, buf: Any) -> None:
            if os.preadv(fd, [buf], offset) != len(buf):
                raise CheckpointError(f"{path}: truncated (chunk at byte {offset})")

        index = read_index(head, lambda o, n: os.pread(fd, n, o), size, str(path))
        return decode(index, read_into, str(path), workers, trusted)
    finally:
        os.close(fd)


def file_options(path: str | Path) -> dict:
    """The format options a file was written with (``{"version": 1}`` for old files)."""
    blob = Path(path).read_bytes()
    magic, version = PREFIX.unpack_from(blob)
    if magic != MAGIC:
        raise CheckpointError(f"{path}: not a labrun checkpoint (bad magic)")
    if version == 1:
        return {"version": 1, "codec": "zstd", "shuffle": False}
    data = memoryview(blob)
    return {"version": version, **read_index(blob[:HEADER_V2.size], lambda o, n: data[o:o + n],
                                             len(blob), str(path))["options"]}


def step_of(path: str | Path) -> int | None:
    m = _NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


def periodic(directory: str | Path) -> list[Path]:
    """``cp_*.ptz`` files in a folder, newest (highest step) first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    files = [p for p in directory.iterdir() if step_of(p) is not None]
    return sorted(files, key=lambda p: step_of(p), reverse=True)


def latest_valid(directory: str | Path, *, trusted: bool | None = None) -> tuple[Path, dict] | None:
    """The newest checkpoint that passes its checksum; corrupt ones are logged and skipped.

    A file the allow-list refuses is not skipped but raised (:class:`UnsafeCheckpoint`): it
    is no accident, and the older files of whoever wrote it are no safer.
    """
    for path in periodic(directory):
        try:
            return path, load(path, trusted=trusted)
        except UnsafeCheckpoint:
            raise
        except CheckpointError as exc:
            log.warning("skipping unusable checkpoint: %s", exc)
    return None
