"""Classification: cross-entropy per sample, KL of temperature-softened class distributions
as the divergence, accuracy as the metric, models and data from the config."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from projects.mutual.data import DataSplits, load_classification
from projects.mutual.losses import kl_divergence
from projects.mutual.models import build_model
from projects.mutual.tasks.base import Task


class ClassificationTask(Task):
    name = "classification"

    @property
    def temperature(self) -> float:
        return float(self.cfg.method.temperature)

    def load_data(self) -> DataSplits:
        d, p = self.cfg.data, self.cfg.perturbation
        return load_classification(d.dataset, path=d.path, val_fraction=d.val_fraction,
                                   test_fraction=d.test_fraction, max_train=d.max_train,
                                   max_test=d.max_test, split_seed=d.split_seed,
                                   image_size=d.image_size, channels=d.channels,
                                   label_noise=p.label_noise, corruption=p.corruption,
                                   severity=p.severity, seed=self.cfg.seed)

    def build_models(self, data: Any) -> tuple[nn.Module, nn.Module]:
        shape, k = data.input_shape, data.num_classes
        a = build_model(self.cfg.model_a.name, shape, k, **self.cfg.model_a.sizes())
        b = build_model(self.cfg.model_b.name, shape, k, **self.cfg.model_b_sizes())
        return a, b

    def per_sample_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs, targets, reduction="none")

    def divergence(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return kl_divergence(student, teacher, self.temperature)

    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"accuracy": (outputs.argmax(dim=1) == targets).float()}
