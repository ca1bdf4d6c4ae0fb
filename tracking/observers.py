"""Run observers: the extension point for code that must watch a run from inside.

Sacred's observer events are the model. ``tracking`` never imports the packages that
provide observers (an Optuna pruner lives in ``sweeps``): they are named in the
``LABRUN_OBSERVERS`` environment variable as ``module:attribute`` and loaded by name.
:class:`Watchers` is the run's connector for them and for the other watchers beside the
task: MLflow's system metrics and the heartbeat tag.
"""
from __future__ import annotations

import importlib
import threading
import time
from abc import ABC
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

if TYPE_CHECKING:
    from tracking.run import Run


class Pruned(Exception):
    """Raised by an observer to stop a run early on purpose (e.g. an Optuna pruner).

    The run ends KILLED with tag ``labrun.pruned=true`` and the process exits with 3.
    """


class RunObserver(ABC):
    """Override the events you need; each default does nothing."""

    def started(self, run: "Run") -> None:
        """The run exists and its tags, params and config are logged."""

    def metrics(self, run: "Run", metrics: Mapping[str, float], step: int) -> None:
        """Metrics were logged at ``step``; raise :class:`Pruned` to stop the run."""

    def completed(self, run: "Run", outcome: str) -> None:
        """The run ended with MLflow status ``outcome`` (FINISHED, FAILED, KILLED)."""


def from_environment() -> list[RunObserver]:
    """Instantiate the observers named in ``LABRUN_OBSERVERS`` (comma-separated)."""
    observers = []
    from tracking import env

    for spec in filter(None, (s.strip() for s in (env.LABRUN_OBSERVERS.get() or "").split(","))):
        module, _, attr = spec.partition(":")
        if not attr:
            raise ValueError(f"LABRUN_OBSERVERS entry {spec!r} must look like module:attribute")
        factory = getattr(importlib.import_module(module), attr)
        observers.append(factory())
    return observers


HEARTBEAT_S = 30.0


class Watchers:
    """What watches one run beside the task: MLflow's system metrics, the heartbeat tag (a
    sweep tells a live run from one whose process died by it), and the run's observers."""

    def __init__(self, run: "Run") -> None:
        self.run = run
        self.observers: list[RunObserver] = []
        self._sysmetrics: Any = None
        self._stop_beat = threading.Event()

    def start_system_metrics(self) -> None:
        from tracking.sysmetrics import SystemMetrics

        world = self.run.world
        self._sysmetrics = SystemMetrics(self.run.run_id, self.run.cfg.launch.system_metrics,
                                         node_id=f"rank{world.rank}" if world.distributed else None)
        self._sysmetrics.start()

    def start(self, observers: Sequence[RunObserver]) -> None:
        """Once the run is recorded: the observers (these and ``LABRUN_OBSERVERS``') see it
        start and see every logged step; the heartbeat begins."""
        self.observers = [*observers, *from_environment()]
        self.run.metrics.listeners.append(self._metrics)
        for obs in self.observers:
            obs.started(self.run)
        threading.Thread(target=self._heartbeat, daemon=True).start()

    def _metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for obs in self.observers:
            obs.metrics(self.run, metrics, step)

    def _heartbeat(self) -> None:
        from tracking import tags as T

        while not self._stop_beat.wait(HEARTBEAT_S):
            try:
                self.run.client.set_tag(self.run.run_id, T.HEARTBEAT, f"{time.time():.0f}")
            except Exception:
                pass

    def stop(self, guarded: Callable[..., Any]) -> None:
        """The run is ending: no more beats or system samples."""
        self._stop_beat.set()
        if self._sysmetrics is not None:
            guarded("stop the system metrics", self._sysmetrics.stop)

    def completed(self, status: str, guarded: Callable[..., Any]) -> None:
        for obs in self.observers:
            guarded("notify an observer", obs.completed, self.run, status)
