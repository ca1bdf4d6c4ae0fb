"""tracking: ONE run — config, provenance, lifecycle, metrics, components, checkpoints, report.

The names below are imported lazily so that ``import tracking`` (and ``labrun --help``)
stays instant: mlflow and torch load only when a run actually starts.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "TaskConfig": "tracking.config",
    "Section": "tracking.config",
    "CheckpointConfig": "tracking.config",
    "ConfigError": "tracking.config",
    "load_config": "tracking.config",
    "resolve_config": "tracking.config",
    "fingerprint": "tracking.config",
    "group_key": "tracking.config",
    "start_run": "tracking.run",
    "Run": "tracking.run",
    "set_research_status": "tracking.run",
    "ComponentResult": "tracking.components",
    "Components": "tracking.components",
    "Gate": "tracking.components",
    "disabled_by": "tracking.components",
    "execution": "tracking.config",
    "Steps": "tracking.loop",
    "TrainerState": "tracking.loop",
    "seed_everything": "tracking.seeding",
    "resolve_device": "tracking.seeding",
    "RunObserver": "tracking.observers",
    "Pruned": "tracking.observers",
    "CheckpointError": "tracking.checkpoint",
    "ResumeInfo": "tracking.checkpoint",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from tracking.checkpoint import CheckpointError, ResumeInfo
    from tracking.components import ComponentResult, Components, Gate, disabled_by
    from tracking.config import (CheckpointConfig, ConfigError, Section, TaskConfig, execution,
                                 fingerprint, group_key, load_config, resolve_config)
    from tracking.loop import Steps, TrainerState
    from tracking.observers import Pruned, RunObserver
    from tracking.run import Run, set_research_status, start_run
    from tracking.seeding import resolve_device, seed_everything


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tracking' has no attribute {name!r}")
