"""The trained detector as one plain ``torch.nn.Module``, for ``run.log_model``.

anomalib's Lightning module holds the trainer, the evaluator and (here) classes defined inside
the factory, none of which an MLflow model should carry; its pipeline for one batch is
pre-processing, the torch model and post-processing. :class:`AnomalyScorer` is that pipeline
alone: images in [0, 1] of any size in, (image scores, anomaly maps) out, normalised by the
thresholds learnt while testing. ``mlflow.pytorch.load_model(uri)(images)`` scores images.
"""
from __future__ import annotations

from typing import Any

import torch


class AnomalyScorer(torch.nn.Module):
    """(N, 3, H, W) images in [0, 1] -> (pred_score (N,), anomaly_map (N, 1, h, w))."""

    def __init__(self, module: Any) -> None:
        super().__init__()
        self.pre_processor = module.pre_processor or torch.nn.Identity()
        self.model = module.model
        self.post_processor = module.post_processor

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(self.pre_processor(images))
        if self.post_processor is not None:
            out = self.post_processor(out)
        return out.pred_score.reshape(-1), out.anomaly_map


def input_example(dataset: Any, n: int = 2) -> torch.Tensor:
    """The first ``n`` test images (already at the configured size)."""
    return torch.stack([dataset[i].image for i in range(min(n, len(dataset)))])
