"""Semantic segmentation: a U-Net and an FCN-style net (or LR-ASPP) label every pixel.

The elements the methods weigh are pixels (``seg.granularity=pixel``): the task loss is the
per-pixel cross-entropy, the imitation divergence the per-pixel ``T^2 KL`` of the temperature-
softened class maps (:func:`projects.mutual.losses.kl_divergence` over the class axis), so
ssmo-hard imitates the peer exactly at the pixels where the peer's loss is lower. Void pixels
(``seg.ignore_index``, 255 in VOC) are left out of the loss, the imitation and every metric
through :meth:`valid_mask`. With ``seg.granularity=image`` each image is one element (the mean
over its valid pixels; the divergence is then the mean over all its pixels, void included,
since a divergence never sees the targets).

Metrics are corpus-level, as the benchmarks report them: :meth:`metrics` returns each image's
per-class intersection and union counts, :meth:`reduce_metrics` sums them over the split, so
``miou`` = mean over classes of sum(I) / sum(U), a class absent from both prediction and truth
(union 0) left out; ``pixel_accuracy`` = correct valid pixels / valid pixels. Headline: miou (max).
"""
from __future__ import annotations

from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from projects.mutual.losses import kl_divergence
from projects.mutual.tasks.base import Task

EVAL_CHUNK = 128
"""Images per forward pass when no graph is built (see :meth:`SegmentationTask.forward`)."""


def confusion_counts(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int) -> dict[str, torch.Tensor]:
    """Per image: intersection and union counts per class (N, K), correct and valid pixels (N,),
    from one per-image confusion matrix (a bincount: no (N, K, H, W) one-hot in memory)."""
    n, k = target.shape[0], num_classes
    valid = target != ignore_index
    image = torch.arange(n, device=target.device).view(n, *([1] * (target.dim() - 1))).expand_as(target)
    idx = (image * k + target.clamp(0, k - 1)) * k + pred.clamp(0, k - 1)
    conf = torch.bincount(idx[valid], minlength=n * k * k).view(n, k, k).double()
    inter = conf.diagonal(dim1=1, dim2=2)
    return {"intersection": inter, "union": conf.sum(2) + conf.sum(1) - inter,
            "correct": inter.sum(1), "valid": valid.flatten(1).sum(1).double()}


def corpus_scores(values: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """``miou`` and ``pixel_accuracy`` from counts summed over a split (see the module doc)."""
    inter, union = values["intersection"].sum(0), values["union"].sum(0)
    present = union > 0
    miou = float((inter[present] / union[present]).mean()) if present.any() else float("nan")
    valid = float(values["valid"].sum())
    acc = float(values["correct"].sum()) / valid if valid else float("nan")
    return {"miou": miou, "pixel_accuracy": acc}


class SegmentationTask(Task):
    name = "segmentation"
    headline: ClassVar[str] = "miou"
    headline_direction: ClassVar[str] = "max"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.num_classes = 0

    @property
    def ignore_index(self) -> int:
        return int(self.cfg.seg.ignore_index)

    def load_data(self):
        from projects.mutual.data import load_segmentation

        d = self.cfg.data
        data = load_segmentation(d.dataset, self.cfg.seg, self.cfg.perturbation, d, path=d.path, seed=self.cfg.seed)
        self.num_classes = data.num_classes
        data.info["majority_floor"] = self.majority_floor(data)
        return data

    def majority_floor(self, data: Any) -> dict[str, Any]:
        """The floor every model must beat: the training set's most frequent class predicted at
        every pixel, scored like a model on each evaluation split."""
        shares = data.info["class_pixel_share"]
        major = max(range(len(shares)), key=shares.__getitem__)
        out: dict[str, Any] = {"class": data.class_names[major] if data.class_names else major}
        for name, split in data.eval_splits().items():
            counts = confusion_counts(torch.full_like(split.y, major), split.y, data.num_classes, self.ignore_index)
            out[name] = {k: round(v, 4) for k, v in corpus_scores(counts).items()}
        return out

    def build_models(self, data: Any) -> tuple[nn.Module, nn.Module]:
        from projects.mutual.models import build_segmenter

        channels, k = data.input_shape[0], data.num_classes
        a = build_segmenter(self.cfg.model_a.name, channels, k, **self.cfg.model_a.sizes())
        b = build_segmenter(self.cfg.model_b.name, channels, k, **self.cfg.model_b_sizes())
        return a, b

    def forward(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        """Without a graph (evaluation scores splits in batches of 1,024), in chunks of
        :data:`EVAL_CHUNK` images: a U-Net's full-resolution skips of 1,024 96 x 96 images would
        take gigabytes; the logits are the same."""
        if torch.is_grad_enabled() or len(inputs) <= EVAL_CHUNK:
            return model(inputs)
        return torch.cat([model(part) for part in inputs.split(EVAL_CHUNK)])

    def _per_image(self) -> bool:
        return self.cfg.seg.granularity == "image"

    def per_sample_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(outputs, targets, ignore_index=self.ignore_index, reduction="none")
        if not self._per_image():
            return loss
        valid = (targets != self.ignore_index).to(loss.dtype)
        return (loss * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1.0)

    def divergence(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        d = kl_divergence(student, teacher, float(self.cfg.method.temperature), dim=1)
        return d.flatten(1).mean(1) if self._per_image() else d

    def valid_mask(self, targets: torch.Tensor) -> torch.Tensor | None:
        if self._per_image():
            return None
        return (targets != self.ignore_index).float()

    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        k = self.num_classes or outputs.shape[1]
        return confusion_counts(outputs.argmax(dim=1), targets, k, self.ignore_index)

    def reduce_metrics(self, values: Mapping[str, torch.Tensor]) -> dict[str, float]:
        out = corpus_scores(values)
        out["loss"] = float(values["loss"].double().mean())
        return out
