"""Hierarchical metric names and a batching logger.

Logging one value per ``log_metric`` call costs a database transaction each (milliseconds
on SQLite); a training loop logging 20 values a step would spend more time tracking than
training. The logger buffers values and writes them with ``log_batch`` from a background
thread, and always flushes what it holds when the run ends, however it ends.
"""
from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

NAMESPACES = ("loss", "metric", "dynamics", "diag", "perf", "sweep", "study")
_SEGMENT = re.compile(r"^[a-z0-9_][a-z0-9_\-]*$")
_MAXIMIZE_WORDS = {"accuracy", "acc", "f1", "auc", "precision", "recall", "r2", "score",
                   "reward", "k_eff", "confidence", "iou", "psnr", "ssim", "win_rate"}
MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call


def validate_name(name: str) -> str:
    """``loss.kl.z`` is valid; ``Loss``, ``kl`` (no namespace) or ``loss..z`` are not."""
    parts = name.split(".")
    if len(parts) < 2 or parts[0] not in NAMESPACES or not all(_SEGMENT.match(p) for p in parts):
        raise ValueError(
            f"invalid metric name {name!r}: use lowercase dotted names under one of "
            f"{', '.join(NAMESPACES)} (e.g. loss.kl.z, metric.accuracy.val)"
        )
    return name


def default_direction(name: str) -> str:
    """'max' for accuracy-like names, else 'min' (losses, errors)."""
    return "max" if any(p in _MAXIMIZE_WORDS for p in name.split(".")) else "min"


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


@dataclass
class MetricLogger:
    """Buffers ``(key, value, step)`` and writes them in ``log_batch`` calls.

    ``flush_every_s`` > 0 starts a daemon thread that flushes on that period; ``flush()``
    and ``close()`` write everything that is left. ``listeners`` see each logged dict
    (run observers use this for Optuna pruning).
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

    def __post_init__(self) -> None:
        self._writer = None
        if self.fast_uri:
            from tracking.backends import metric_writer

            self._writer = metric_writer(self.fast_uri)  # None: log_batch (why is logged once)
        self._buffer: list = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._known: set[str] = set()
        if self.flush_every_s > 0:
            self._thread = threading.Thread(target=self._loop, name="labrun-metrics", daemon=True)
            self._thread.start()

    def set_direction(self, name: str, direction: str) -> None:
        if direction not in ("min", "max"):
            raise ValueError(f"direction must be 'min' or 'max', got {direction!r}")
        self.directions[name] = direction
        if name in self.stats:
            old = self.stats[name]
            old.direction = direction
            old.best, old.best_step = math.nan, -1

    def log(self, metrics: Mapping[str, float], step: int, timestamp_ms: int | None = None) -> None:
        ts = timestamp_ms if timestamp_ms is not None else int(time.time() * 1000)
        rows = []
        for name, value in metrics.items():
            if name not in self._known:
                validate_name(name)
                self._known.add(name)
            v = float(value)
            rows.append((name, v, ts, int(step)))
            st = self.stats.get(name)
            if st is None:
                st = self.stats[name] = MetricStats(self.directions.get(name) or default_direction(name))
            st.update(v, int(step))
        with self._lock:
            self._buffer.extend(rows)
            full = len(self._buffer) >= self.max_buffer
        if full:
            self.flush()
        for listener in self.listeners:
            listener(metrics, int(step))

    def flush(self) -> None:
        with self._write_lock:
            with self._lock:
                rows, self._buffer = self._buffer, []
            for i in range(0, len(rows), MAX_BATCH):
                try:
                    self._write(rows[i:i + MAX_BATCH])
                except BaseException:
                    with self._lock:  # keep what was not written for the next try
                        self._buffer[:0] = rows[i:]
                    raise

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

        self.client.log_batch(self.run_id, metrics=[Metric(*row) for row in rows])

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_every_s):
            try:
                self.flush()
            except BaseException as exc:  # surfaced by close(); never kill training from here
                self._error = exc

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            self.flush()
        finally:
            if self._writer is not None:
                self._writer.close()
        if self._error is not None:
            err, self._error = self._error, None
            raise RuntimeError(f"background metric flush failed: {err}") from err

    def summary(self) -> dict[str, dict]:
        return {k: v.as_dict() for k, v in sorted(self.stats.items())}
