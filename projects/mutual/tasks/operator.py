"""Operator learning: a map between function spaces (Burgers u0 -> u(1), Darcy a -> u) learned
by a heterogeneous pair (FNO from neuraloperator, DeepONet).

Models see standardised fields (:class:`~projects.mutual.data.pde.loader.OperatorSplits`).
The task loss per element (``pde.loss``, ``pde.granularity``) is the MSE of the standardised
fields per sample (or per grid point), or each sample's relative L2 error in physical units;
the imitation divergence is the MSE between the two models' standardised predicted fields,
shaped like the loss. Metrics, in physical units, per sample: ``rel_l2`` = ||G(a) - u|| / ||u||
(the headline, lower is better) and ``mse``.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from projects.mutual.losses import mse_divergence
from projects.mutual.tasks.base import Task


def _field_dims(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(range(1, t.dim()))


class OperatorTask(Task):
    name = "operator"
    headline: ClassVar[str] = "rel_l2"
    headline_direction: ClassVar[str] = "min"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.scale = {"y_mean": 0.0, "y_std": 1.0}

    def load_data(self):
        from projects.mutual.data import load_operator

        data = load_operator(self.cfg.data.dataset, self.cfg.pde, self.cfg.perturbation,
                             split_seed=self.cfg.data.split_seed)
        self.scale = data.scale
        return data

    def build_models(self, data: Any) -> tuple[nn.Module, nn.Module]:
        from projects.mutual.models import build_operator

        a = build_operator(self.cfg.model_a.name, data.dim, data.resolution, data.periodic, **self.cfg.model_a.sizes())
        b = build_operator(self.cfg.model_b.name, data.dim, data.resolution, data.periodic, **self.cfg.model_b_sizes())
        return a, b

    def _physical(self, field: torch.Tensor) -> torch.Tensor:
        return field * self.scale["y_std"] + self.scale["y_mean"]

    def _rel_l2(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pred, true = self._physical(outputs), self._physical(targets)
        dims = _field_dims(true)
        return (pred - true).pow(2).sum(dims).sqrt() / true.pow(2).sum(dims).sqrt().clamp_min(1e-12)

    def _per_point(self) -> bool:
        return self.cfg.pde.granularity == "point"

    def per_sample_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.cfg.pde.loss == "rel_l2":
            return self._rel_l2(outputs, targets)
        return mse_divergence(outputs, targets, () if self._per_point() else None)

    def divergence(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return mse_divergence(student, teacher, () if self._per_point() else None)

    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        err = (self._physical(outputs) - self._physical(targets)).pow(2)
        return {"rel_l2": self._rel_l2(outputs, targets), "mse": err.mean(_field_dims(err))}
