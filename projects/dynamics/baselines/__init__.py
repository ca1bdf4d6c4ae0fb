"""The stabilisers the monitor must beat, as configurations of one trainer.

``train.stabiliser`` picks one: ``none`` (AdamW, the base schedule), ``cosine`` (cosine
with warm-up), ``clip`` (fixed-norm gradient clipping), ``zclip`` (the ``zclip`` package's
z-score adaptive clipping), ``spam`` (``pytorch_optimizer.SPAM``: spike-aware clipping
and momentum resets), ``adam_hd`` (:class:`AdamHD`). A stabiliser is an optimizer plus a
:class:`Clipper` (what happens to the gradients between backward and step).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any

from projects.dynamics.baselines.adam_hd import AdamHD


class Clipper(ABC):
    """Between ``backward`` and ``optimizer.step``: returns the pre-clipping gradient norm."""

    @abstractmethod
    def __call__(self, model: Any) -> float: ...

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class NoClip(Clipper):
    def __call__(self, model: Any) -> float:
        import torch

        return float(torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf))


class NormClip(Clipper):
    def __init__(self, max_norm: float) -> None:
        self.max_norm = max_norm

    def __call__(self, model: Any) -> float:
        import torch

        return float(torch.nn.utils.clip_grad_norm_(model.parameters(), self.max_norm))


class ZClipper(Clipper):
    """``zclip.ZClip(...).step(model)``; its running statistics are checkpointed."""

    FIELDS = ("buffer", "initialized", "mean", "var")

    def __init__(self, alpha: float, z_thresh: float, warmup: int) -> None:
        from zclip import ZClip

        self.z = ZClip(alpha=alpha, z_thresh=z_thresh, max_grad_norm=None, warmup_steps=warmup,
                       mode="zscore", clip_option="adaptive_scaling")

    def __call__(self, model: Any) -> float:
        return float(self.z.step(model))

    def state_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, list) else v) for k, v in
                ((f, getattr(self.z, f)) for f in self.FIELDS)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for f in self.FIELDS:
            setattr(self.z, f, list(state[f]) if isinstance(state[f], list) else state[f])


def build_optimizer(t: Any, params: Any) -> Any:
    """``t`` is the ``train`` config section."""
    import torch

    if t.stabiliser == "spam":
        from pytorch_optimizer import SPAM

        return SPAM(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay,
                    threshold=t.spam_threshold, update_proj_gap=t.spam_reset_gap)
    if t.stabiliser == "adam_hd":
        return AdamHD(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay,
                      hypergrad_lr=t.hd_beta)
    return torch.optim.AdamW(params, lr=t.lr, betas=tuple(t.betas), weight_decay=t.weight_decay)


def build_clipper(t: Any) -> Clipper:
    if t.stabiliser == "clip":
        return NormClip(t.clip_norm)
    if t.stabiliser == "zclip":
        return ZClipper(t.zclip_alpha, t.zclip_z, t.zclip_warmup)
    return NoClip()


__all__ = ["AdamHD", "Clipper", "NoClip", "NormClip", "ZClipper", "build_optimizer", "build_clipper"]
