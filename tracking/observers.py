"""Run observers: the extension point for code that must watch a run from inside.

Sacred's observer events are the model. ``tracking`` never imports the packages that
provide observers (an Optuna pruner lives in ``sweeps``): they are named in the
``LABRUN_OBSERVERS`` environment variable as ``module:attribute`` and loaded by name.
"""
from __future__ import annotations

import importlib
from abc import ABC
from typing import TYPE_CHECKING, Mapping

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
