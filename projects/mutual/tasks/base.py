"""The task interface: what a problem supplies so that the method layer and the training
loop never depend on it.

A task turns a config into data and a pair of models, and defines per-element task losses,
the per-element divergence used for imitation and evaluation metrics. Everything else
(:func:`projects.mutual.joint.joint_step`, :func:`projects.mutual.joint.evaluate`,
:func:`projects.mutual.dynamics.gradient_dynamics`, the methods) works for any task.
"""
from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

import torch

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from projects.mutual.config import Config


class Task(abc.ABC):
    """Base of every mutual-learning problem (classification, operator, timeseries, segmentation).

    ``load_data`` returns an object with ``train``, ``val``, ``test`` splits (``.x``,
    ``.y``, ``name``), ``eval_splits()`` and ``probe(size, seed)`` (see
    :class:`projects.mutual.data.base.DataSplits`).
    """

    name: ClassVar[str]

    def __init__(self, cfg: "Config"):
        self.cfg = cfg

    @abc.abstractmethod
    def load_data(self) -> Any:
        """The run's splits, with its condition applied (fixed per seed)."""

    @abc.abstractmethod
    def build_models(self, data: Any) -> "tuple[nn.Module, nn.Module]":
        """Fresh models A and B for this data (B already handicapped under ``weak_peer``)."""

    def forward(self, model: "nn.Module", inputs: Any) -> Any:
        """A model's outputs for a batch of inputs (whatever the loss and divergence take)."""
        return model(inputs)

    @abc.abstractmethod
    def per_sample_loss(self, outputs: Any, targets: Any) -> torch.Tensor:
        """Unreduced task loss: one value per sample (or per pixel, per time step...)."""

    @abc.abstractmethod
    def divergence(self, student: Any, teacher: Any) -> torch.Tensor:
        """Per-element imitation divergence, shaped like :meth:`per_sample_loss`."""

    def valid_mask(self, targets: Any) -> torch.Tensor | None:
        """Optional 0/1 mask of loss elements that count (e.g. not ignored pixels)."""
        return None

    @abc.abstractmethod
    def metrics(self, outputs: Any, targets: Any) -> dict[str, torch.Tensor]:
        """Per-sample evaluation values (first dim = batch), e.g. ``{"accuracy": correct}``;
        :meth:`reduce_metrics` turns the values of a whole split into numbers."""

    def reduce_metrics(self, values: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Values of a whole split (concatenated over batches) -> one number each: the mean
        by default; override for corpus-level metrics (e.g. IoU from summed counts)."""
        return {k: float(v.double().mean()) for k, v in values.items()}
