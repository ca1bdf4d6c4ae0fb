"""The metric journal: what ``MetricLogger.log`` returned from survives a SIGKILL.

A memory-mapped file per run (under :func:`journal_root`): the kernel owns the pages, so a
killed process leaves every appended record behind, and :func:`tracking.metrics.recover`
writes them to the store later; a clean close deletes the journal.
"""
from __future__ import annotations

import marshal
import mmap
import os
import struct
import tempfile
from pathlib import Path
from typing import Iterator

_LEN = struct.Struct("<I")
SEGMENT_BYTES = 8 << 20


def journal_root() -> Path:
    """Where journals live: ``$LABRUN_JOURNAL_DIR``, else ``<tmp>/labrun-journal``."""
    from tracking import env

    return Path(env.LABRUN_JOURNAL_DIR.get() or Path(tempfile.gettempdir()) / "labrun-journal")


class Journal:
    """Append-only records ``(step, timestamp_ms, {name: value})`` in memory-mapped segments.

    Writing a record is a memory copy (no system call): the bytes land in the page cache,
    which outlives the process, so a SIGKILL keeps every record whose ``append`` returned.
    Its length is written after its bytes, so a record torn by the kill reads as the end.
    The caller serialises appends; :meth:`cut` starts a new segment and hands back the old
    ones, to be deleted once their rows are in the store.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._prefix = f"{os.getpid()}-{id(self):x}"
        self._seq = 0
        self._segments: list[Path] = []
        self._mm: mmap.mmap | None = None
        self._open(SEGMENT_BYTES)

    def _open(self, size: int) -> None:
        self._seq += 1
        path = self.folder / f"{self._prefix}-{self._seq:08d}.mlj"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            # Reserve the blocks now: a write into a sparse mapping on a full disk is a SIGBUS,
            # a failed reservation is an OSError the logger can take.
            os.posix_fallocate(fd, 0, size)
            self._mm = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        os.close(fd)
        self._segments.append(path)
        self._pos = 0

    def append(self, blob: bytes) -> None:
        n = len(blob)
        if self._pos + n + 2 * _LEN.size > len(self._mm):
            self._mm.close()
            self._open(max(SEGMENT_BYTES, n + 2 * _LEN.size))
        pos = self._pos
        self._mm[pos + _LEN.size:pos + _LEN.size + n] = blob
        _LEN.pack_into(self._mm, pos, n)
        self._pos = pos + _LEN.size + n

    def cut(self) -> list[Path]:
        """Segments holding everything appended so far; later appends go to a new one."""
        if self._pos == 0 and len(self._segments) == 1:
            return []
        done = list(self._segments)
        self._mm.close()
        self._segments = []
        self._open(SEGMENT_BYTES)
        return done

    def close(self, *, delete: bool) -> None:
        """Unmap; ``delete``: remove this journal's segments (another logger's stay)."""
        if self._mm is not None:
            self._mm.close()
            self._mm = None
        if delete:
            for path in self._segments:
                path.unlink(missing_ok=True)
            try:
                self.folder.rmdir()
            except OSError:
                pass


def read_journal(folder: Path) -> Iterator[tuple[int, int, dict]]:
    """The records of every segment in ``folder``, segment by segment in write order."""
    for path in sorted(folder.glob("*.mlj"), key=lambda p: (p.name.rsplit("-", 1)[0], p.name)):
        data = path.read_bytes()
        pos = 0
        while pos + _LEN.size <= len(data):
            (n,) = _LEN.unpack_from(data, pos)
            end = pos + _LEN.size + n
            if n == 0 or end > len(data):
                break
            try:
                record = marshal.loads(data[pos + _LEN.size:end])
            except (EOFError, ValueError, TypeError):
                break  # a record torn by a kill: its log() never returned
            yield record
            pos = end


def pid_alive(path: Path) -> bool:
    """Whether the process that wrote a journal segment (its pid begins the name) still runs."""
    try:
        pid = int(path.name.split("-", 1)[0])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    from tracking.store import process_alive  # a zombie (killed, not yet reaped) is dead too

    return process_alive(pid)
