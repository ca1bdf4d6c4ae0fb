"""Hierarchical metric names and a batching logger.

Logging one value per ``log_metric`` call costs a database transaction each (milliseconds
on SQLite); a training loop logging 20 values a step would spend more time tracking than
training. The logger buffers values and writes them from a background thread, and always
flushes what it holds when the run ends, however it ends.

The training thread only appends: it checks a name the first time it sees it (a bad name
stays an immediate ``ValueError`` to the caller, and costs a set lookup afterwards), turns
the values into floats (a tensor could change after ``log`` returned), and appends one
record to the buffer and to the journal. Building rows, the summary statistics and the store
write happen on flush. The journal is a memory-mapped file per run: what ``log`` returned
from survives a SIGKILL (the kernel owns the pages) and :func:`recover` writes it to the
store later; a clean close deletes it. Order is what it always was: rows reach the store
in the order they were logged, and ``latest_metrics`` holds the largest (step, timestamp,
value) of each key.
"""
from __future__ import annotations

import marshal
import math
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from tracking.journal import Journal, journal_root, pid_alive, read_journal

NAMESPACES = ("loss", "metric", "dynamics", "diag", "perf", "sweep", "study")
"""The first segment of every metric name (the one list: the Lightning bridge maps into it)."""
_SEGMENT = re.compile(r"^[a-z0-9_][a-z0-9_\-]*$")
MAXIMIZE_WORDS = frozenset({
    "accuracy", "acc", "f1", "auc", "auroc", "aupro", "auprc", "ap", "map", "precision", "recall",
    "r2", "score", "reward", "k_eff", "confidence", "iou", "miou", "dice", "psnr", "ssim", "win_rate"})
"""A metric whose name holds one of these words (between dots or underscores) is better high."""
MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call
MAX_SQL_BATCH = 20_000
"""Rows per transaction of the bulk SQL writer: big enough for SQLite's full speed, small
enough that other writers of the same store wait well under a second for its lock."""


def validate_name(name: str) -> str:
    """``loss.kl.z`` is valid; ``Loss``, ``kl`` (no namespace) or ``loss..z`` are not."""
    parts = name.split(".")
    if len(parts) < 2 or parts[0] not in NAMESPACES or not all(_SEGMENT.match(p) for p in parts):
        raise ValueError(
            f"invalid metric name {name!r}: use lowercase dotted names under one of "
            f"{', '.join(NAMESPACES)} (e.g. loss.kl.z, metric.accuracy.val)"
        )
    return name


def higher_is_better(name: str) -> bool:
    """Accuracy-like names (AUROC, F1, ``metric.image_auroc.test``); never a ``loss.*``."""
    words = set(name.split(".")) | set(re.split(r"[._]", name))
    return not name.startswith("loss.") and bool(words & MAXIMIZE_WORDS)


def default_direction(name: str) -> str:
    """'max' for accuracy-like names, else 'min' (losses, errors)."""
    return "max" if higher_is_better(name) else "min"


@dataclass
class MetricStats:
    """What summary.json needs of a metric, kept while logging instead of re-read later."""

    direction: str
    final: float = math.nan
    final_step: int = -1
    best: float = math.nan
    best_step: int = -1
    count: int = 0

    def update(self, value: float, step: int) -> None:
        self.count += 1
        if step >= self.final_step:
            self.final, self.final_step = value, step
        if math.isnan(value):
            return
        better = (value < self.best) if self.direction == "min" else (value > self.best)
        if math.isnan(self.best) or better:
            self.best, self.best_step = value, step

    def as_dict(self) -> dict:
        return {"final": self.final, "final_step": self.final_step, "best": self.best,
                "best_step": self.best_step, "direction": self.direction, "count": self.count}


def recover(client: Any, run_id: str, *, fast_uri: str | None = None, root: Path | None = None) -> int:
    """Write what a killed process journaled for ``run_id`` to the store; returns the rows.

    Rows already in the store are ignored by both writers (MLflow treats an identical
    metric row as a duplicate), so replaying a journal that was half flushed is safe. A
    journal whose process still runs is left alone. Call it before reading a killed run's
    history (a resume, a stale-run check).
    """
    folder = (root or journal_root()) / run_id
    if not folder.is_dir():
        return 0
    mine = [p for p in folder.glob("*.mlj") if not pid_alive(p)]
    if not mine:
        return 0
    logger = MetricLogger(client, run_id, flush_every_s=0, fast_uri=fast_uri, journal=False)
    staging = folder / f".recover-{os.getpid()}"
    staging.mkdir(exist_ok=True)
    for p in mine:
        p.rename(staging / p.name)
    count = 0
    for step, ts, values in read_journal(staging):
        logger._append(values, step, ts)
        count += len(values)
    logger.close()
    shutil.rmtree(staging, ignore_errors=True)
    try:
        folder.rmdir()
    except OSError:
        pass
    return count


# --------------------------------------------------------------------------- logger

@dataclass
class MetricLogger:
    """Buffers ``(key, value, step)`` and writes them in batches from a background thread.

    ``flush_every_s`` > 0 starts a daemon thread that flushes on that period, and early
    when ``max_buffer`` values wait; ``flush()`` and ``close()`` write everything that is
    left (``flush_every_s=0``: only they write, from the caller's thread). ``listeners`` see
    each logged dict (run observers use this for Optuna pruning). ``journal``: True keeps a
    journal under :func:`journal_root` (see the module docstring), a path puts it there,
    False keeps none.
    """

    client: object
    run_id: str
    flush_every_s: float = 2.0
    max_buffer: int = 5000
    directions: dict[str, str] = field(default_factory=dict)
    stats: dict[str, MetricStats] = field(default_factory=dict)
    listeners: list[Callable[[Mapping[str, float], int], None]] = field(default_factory=list)

    fast_uri: str | None = None
    """Tracking URI of an SQL store to write to directly (``tracking.backends.metric_writer``);
    None, another store, or a fast path that is off: ``log_batch``."""

    journal: bool | str | Path = True

    def __post_init__(self) -> None:
        self._writer = None
        if self.fast_uri:
            from tracking.backends import metric_writer

            self._writer = metric_writer(self.fast_uri)  # None: log_batch (why is logged once)
        self._records: list = []       # (step, ts, {name: float}) as logged, not yet rows
        self._count = 0                # values in _records
        self._rows: list = []          # converted, not yet in the store
        self._segments: list[Path] = []  # journal segments holding _rows
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._known: set[str] = set()
        self._journal = None
        if self.journal:
            folder = journal_root() / self.run_id if self.journal is True else Path(self.journal)
            try:
                self._journal = Journal(folder)
            except OSError as exc:
                self._journal_off(exc)
        if self.flush_every_s > 0:
            self._thread = threading.Thread(target=self._loop, name="labrun-metrics", daemon=True)
            self._thread.start()

    def set_direction(self, name: str, direction: str) -> None:
        if direction not in ("min", "max"):
            raise ValueError(f"direction must be 'min' or 'max', got {direction!r}")
        with self._write_lock:
            self._convert()  # values logged before this count under the old direction
            self.directions[name] = direction
            if name in self.stats:
                old = self.stats[name]
                old.direction = direction
                old.best, old.best_step = math.nan, -1

    def log(self, metrics: Mapping[str, float], step: int, timestamp_ms: int | None = None) -> None:
        """Validate new names and append; the store write happens on flush (see the module)."""
        if not self._known.issuperset(metrics):
            for name in metrics:
                if name not in self._known:
                    validate_name(name)
                    self._known.add(name)
        values = {name: float(v) for name, v in metrics.items()}
        step = int(step)
        self._append(values, step, timestamp_ms if timestamp_ms is not None else int(time.time() * 1000))
        for listener in self.listeners:
            listener(metrics, step)

    def _journal_off(self, exc: OSError) -> None:
        """No room or no permission for the journal: log on, unprotected against SIGKILL."""
        import logging

        logging.getLogger("labrun").warning(
            "labrun: metric journal off for run %s (%s); values logged since the last flush "
            "would be lost to a SIGKILL", self.run_id, exc)
        self._journal = None

    def _append(self, values: dict, step: int, ts: int) -> None:
        record = (step, ts, values)
        with self._lock:
            if self._journal is not None:
                try:
                    self._journal.append(marshal.dumps(record))
                except OSError as exc:
                    self._journal_off(exc)
            self._records.append(record)
            self._count += len(values)
            count = self._count
        if count >= self.max_buffer:
            if self._thread is not None and count < 20 * self.max_buffer:
                self._wake.set()     # the flusher writes them; the caller goes on
            else:
                self.flush()         # no flusher, or it cannot keep up: write from here

    def _convert(self) -> None:
        """Records to rows and statistics, in logged order (caller holds ``_write_lock``)."""
        with self._lock:
            records, self._records, self._count = self._records, [], 0
            if self._journal is not None:
                try:
                    self._segments += self._journal.cut()
                except OSError as exc:
                    self._journal_off(exc)
        rows, stats = self._rows, self.stats
        for step, ts, values in records:
            for name, v in values.items():
                rows.append((name, v, ts, step))
                st = stats.get(name)
                if st is None:
                    st = stats[name] = MetricStats(self.directions.get(name) or default_direction(name))
                st.update(v, step)

    def flush(self) -> None:
        """Write everything logged before this call; what fails stays for the next try."""
        with self._write_lock:
            self._convert()
            while self._rows:
                size = MAX_SQL_BATCH if self._writer is not None else MAX_BATCH
                batch = self._rows[:size]
                self._write(batch)
                del self._rows[:len(batch)]
            for path in self._segments:  # their rows are in the store now
                path.unlink(missing_ok=True)
            self._segments = []

    def _write(self, rows: list) -> None:
        if self._writer is not None:
            try:
                self._writer.write(self.run_id, rows)
                return
            except Exception as exc:  # schema or driver surprise: MLflow's own path always works
                from tracking.backends import announce_fallback, describe_error

                writer, self._writer = self._writer, None
                announce_fallback("metric_writer", f"a bulk write failed ({describe_error(exc)})")
                try:
                    writer.close()
                except Exception:
                    pass
        from mlflow.entities import Metric

        for i in range(0, len(rows), MAX_BATCH):
            self.client.log_batch(self.run_id, metrics=[Metric(*row) for row in rows[i:i + MAX_BATCH]])

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_every_s)
            self._wake.clear()
            try:
                self.flush()
            except BaseException as exc:  # surfaced by close(); never kill training from here
                self._error = exc

    def close(self) -> None:
        """Stop the flusher and write what is left; the journal goes once all is stored."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        stored = False
        try:
            self.flush()
            stored = True
        finally:
            if self._journal is not None:
                self._journal.close(delete=stored)
            if self._writer is not None:
                self._writer.close()
        if self._error is not None:
            err, self._error = self._error, None
            raise RuntimeError(f"background metric flush failed: {err}") from err

    def summary(self) -> dict[str, dict]:
        with self._write_lock:
            self._convert()
        return {k: v.as_dict() for k, v in sorted(self.stats.items())}
