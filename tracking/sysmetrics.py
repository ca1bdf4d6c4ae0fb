"""System metrics (CPU, memory, disk, network, GPU when present) through MLflow's own monitor.

Modes: ``on`` samples from the start, ``off`` never, ``auto`` (the default) starts once the
run has lasted ``AUTO_AFTER_S`` (3 s): every quick-config run shows its system metrics in the
UI, a second-long test run pays nothing. Cost measured on the 2-core machine: ~0.4 s wall the
first time in a process (imports), ~0.02-0.16 s CPU per run, one sample every ``SAMPLING_S``
plus a last one when the run ends. ``bench/mlflow_native.py`` measures more.
Without psutil (MLflow's requirement for them) a mode other than off is a no-op with a warning.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger("labrun")

MODES = ("auto", "on", "off")
AUTO_AFTER_S = 3.0
SAMPLING_S = 5.0


class SystemMetrics:
    """Owns one run's monitor: :meth:`start` per the mode, :meth:`stop` when the run ends."""

    def __init__(self, run_id: str, mode: str = "auto", *, after_s: float = AUTO_AFTER_S,
                 sampling_s: float = SAMPLING_S, node_id: str | None = None) -> None:
        self.run_id, self.mode, self.after_s, self.sampling_s = run_id, mode, after_s, sampling_s
        self.node_id = node_id  # a DDP rank's samples go under system/<node_id>/ (MLflow's own prefix)
        self._monitor: Any = None
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        if self.mode == "off":
            return
        if self.mode == "on":
            self._begin()
            return
        self._timer = threading.Timer(self.after_s, self._begin)
        self._timer.daemon = True
        self._timer.start()

    def _begin(self) -> None:
        try:
            import psutil  # noqa: F401
        except ImportError:
            log.warning("system metrics need psutil (pip install psutil); not recorded")
            return
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
        from tracking.store import tracking_uri

        with self._lock:
            if self._monitor is not None:
                return
            self._monitor = SystemMetricsMonitor(self.run_id, sampling_interval=self.sampling_s,
                                                 tracking_uri=tracking_uri(), node_id=self.node_id)
            self._monitor.start()

    @property
    def active(self) -> bool:
        return self._monitor is not None

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        with self._lock:
            if self._monitor is not None:
                m, self._monitor = self._monitor, None
                m.finish()
                # The loop publishes only after a full interval: the samples since the last
                # one (all of them, for a run shorter than the interval) become a last point.
                last = m.aggregate_metrics()
                if last:
                    m.publish_metrics(last)
                    m.mlflow_logger.flush()
