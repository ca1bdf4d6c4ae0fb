"""Problems that plug into the method layer, one :class:`~projects.mutual.tasks.base.Task` each.

``classification`` and ``operator`` (PDE solution operators); time series and segmentation
add a module and a line here (plus their datasets in :data:`projects.mutual.data.DATASET_PROBLEMS`
and their models' ``problem`` in :data:`projects.mutual.models.MODELS`) (the method layer, :mod:`projects.mutual.methods`, does not change).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from projects.mutual.registry import LazyRegistry

if TYPE_CHECKING:  # pragma: no cover
    from projects.mutual.tasks.base import Task

TASKS = LazyRegistry("problem", {
    "classification": "projects.mutual.tasks.classification:ClassificationTask",
    "operator": "projects.mutual.tasks.operator:OperatorTask",
    "timeseries": "projects.mutual.tasks.timeseries:TimeSeriesTask",
    "segmentation": "projects.mutual.tasks.segmentation:SegmentationTask",
})


def task_names() -> tuple[str, ...]:
    return TASKS.names()


def get_task(name: str) -> "type[Task]":
    """The Task class of ``name``; an unknown name is one line listing the valid ones."""
    return TASKS.get(name)
