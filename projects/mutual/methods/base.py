"""The method interface: per-sample task losses of two peers -> each peer's training loss.

For peers A and B with per-element task losses ``L_A``, ``L_B`` (one value per sample, or
per pixel, per time step...: any shape, the same for both) and a per-element divergence
``D(student, teacher)`` supplied by the task (KL of softened class distributions,
MSE between fields), every method computes, symmetrically for B::

    w_A      = imitation_weights(L_A.detach(), L_B.detach())          # per element, in [0, 1]
    imit_A   = mean(w_A * D(out_A, stop_grad(out_B)))
    total_A  = mean(L_A) + lam_eff * imit_A,    lam_eff = lam * warm-up scale

A method is only its weight rule (:meth:`MutualMethod.imitation_weights`). The peer's outputs
are detached here, never by the task, so no imitation gradient can reach the peer. Means run
over all elements (or the ``valid`` ones), not over the imitating ones: ``lam`` keeps its
meaning whatever share of the batch a mask switches on.

Warm-up: ``lam_eff = 0`` before ``warmup`` (in ``warmup_unit``: the caller passes ``epoch``,
fractional epochs allowed, or ``step``), then a linear ramp over ``ramp`` units to ``lam``
(``ramp = 0``: a step to ``lam``). While ``lam_eff = 0`` the imitation term is still
computed for logging, without a graph, and ``mask_ratio`` is 0 (imitation is off).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch

Divergence = Callable[[Any, Any], torch.Tensor]
"""``divergence(student_outputs, teacher_outputs) -> per-element tensor`` shaped like the losses."""

WARMUP_UNITS = ("epochs", "steps")


def detach(outputs: Any) -> Any:
    """Tensors (also inside tuples, lists, dicts) without their graph: the stop-gradient."""
    if isinstance(outputs, torch.Tensor):
        return outputs.detach()
    if isinstance(outputs, Mapping):
        return type(outputs)({k: detach(v) for k, v in outputs.items()})
    if isinstance(outputs, (tuple, list)):
        return type(outputs)(detach(v) for v in outputs)
    return outputs


def masked_mean(values: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over all elements, or over those where ``valid`` is nonzero (e.g. ignored pixels)."""
    if valid is None:
        return values.mean()
    valid = valid.to(values.dtype)
    return (values * valid).sum() / valid.sum().clamp_min(1.0)


@dataclass
class PeerLosses:
    """One peer's losses for one batch."""

    task: torch.Tensor
    """Mean per-element task loss (with graph)."""
    imitation: torch.Tensor
    """``mean(weight * D(self, stop_grad(peer)))`` (with graph while ``lam > 0``), before lam."""
    total: torch.Tensor
    """``task + lam * imitation``: what this peer's optimizer minimises."""
    weight: torch.Tensor
    """Per-element imitation weight of the method's rule (detached): 1 = imitate the peer."""
    lam: float
    """Effective imitation weight after warm-up (``method.lam`` x scale)."""
    divergence: torch.Tensor
    """Unweighted mean divergence to the peer (detached; computed for every method, for logging)."""
    valid: torch.Tensor | None = None

    @property
    def mask_ratio(self) -> float:
        """Share of elements imitated (mean weight for soft weights); 0 while imitation is off."""
        if self.lam <= 0.0:
            return 0.0
        return float(masked_mean(self.weight.float(), self.valid))


@dataclass
class MethodLosses:
    """Both peers' losses for one batch and the warm-up scale that applied."""

    a: PeerLosses
    b: PeerLosses
    scale: float

    def peers(self) -> dict[str, PeerLosses]:
        return {"a": self.a, "b": self.b}

    def metrics(self, names: Sequence[str] = ("a", "b")) -> dict[str, float]:
        """``loss.<m>.task|imitation|total``, ``loss.total``, ``diag.<m>.mask_ratio|divergence``,
        ``diag.imitation_scale``: plain floats for ``run.log_metrics``."""
        out: dict[str, float] = {}
        for name, peer in zip(names, (self.a, self.b)):
            out[f"loss.{name}.task"] = float(peer.task.detach())
            out[f"loss.{name}.imitation"] = float(peer.imitation.detach())
            out[f"loss.{name}.total"] = float(peer.total.detach())
            out[f"diag.{name}.mask_ratio"] = peer.mask_ratio
            out[f"diag.{name}.divergence"] = float(peer.divergence)
        out["loss.total"] = out[f"loss.{names[0]}.total"] + out[f"loss.{names[1]}.total"]
        out["diag.imitation_scale"] = float(self.scale)
        return out


class MutualMethod(abc.ABC):
    """Base of every method: subclasses set ``name`` and implement :meth:`imitation_weights`.

    All methods take the same hyperparameters (those of the ``method`` config section); a
    rule ignores the ones it does not use (only ``ssmo-soft`` reads ``k``).
    """

    name: ClassVar[str]
    imitates: ClassVar[bool] = True
    """False: the imitation term is identically 0 without a graph (the divergence is still
    computed, without a graph, for the ``divergence`` diagnostic)."""

    def __init__(self, lam: float = 1.0, k: float = 10.0, warmup: float = 0.0, ramp: float = 0.0,
                 warmup_unit: str = "epochs"):
        if lam < 0 or warmup < 0 or ramp < 0 or k <= 0:
            raise ValueError(f"{self.name}: need lam >= 0, k > 0, warmup >= 0, ramp >= 0 "
                             f"(got lam={lam}, k={k}, warmup={warmup}, ramp={ramp})")
        if warmup_unit not in WARMUP_UNITS:
            raise ValueError(f"unknown warmup_unit {warmup_unit!r}; valid: {', '.join(WARMUP_UNITS)}")
        self.lam, self.k = float(lam), float(k)
        self.warmup, self.ramp, self.warmup_unit = float(warmup), float(ramp), warmup_unit

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, lam={self.lam}, k={self.k}, "
                f"warmup={self.warmup}, ramp={self.ramp}, warmup_unit={self.warmup_unit!r})")

    # ------------------------------------------------------------------ the rule
    @abc.abstractmethod
    def imitation_weights(self, loss_self: torch.Tensor, loss_peer: torch.Tensor) -> torch.Tensor:
        """Per-element weight in [0, 1] of the imitation term of the peer whose per-element
        task loss is ``loss_self`` (both inputs detached, same shape; return that shape)."""

    # ------------------------------------------------------------------ warm-up
    def scale(self, *, epoch: float | None = None, step: int | None = None) -> float:
        """Warm-up factor in [0, 1] at this point of training."""
        if self.warmup == 0.0 and self.ramp == 0.0:
            return 1.0
        t = epoch if self.warmup_unit == "epochs" else step
        if t is None:
            arg = "epoch" if self.warmup_unit == "epochs" else "step"
            raise ValueError(f"method.warmup is in {self.warmup_unit}: pass {arg}=... to the method")
        if t < self.warmup:
            return 0.0
        if self.ramp == 0.0:
            return 1.0
        return min(1.0, (float(t) - self.warmup) / self.ramp)

    # ------------------------------------------------------------------ the losses
    def __call__(self, loss_a: torch.Tensor, loss_b: torch.Tensor, out_a: Any, out_b: Any,
                 divergence: Divergence, *, epoch: float | None = None, step: int | None = None,
                 valid: torch.Tensor | None = None) -> MethodLosses:
        """Both peers' losses from their per-element task losses and outputs.

        ``loss_a``/``loss_b``: unreduced task losses (same shape, with graph); ``out_a``/
        ``out_b``: what ``divergence`` compares; ``valid``: optional per-element 0/1 mask
        (e.g. segmentation pixels to ignore), shaped like the losses.
        """
        if loss_a.shape != loss_b.shape:
            raise ValueError(f"per-element losses of the peers differ in shape: "
                             f"{tuple(loss_a.shape)} vs {tuple(loss_b.shape)}")
        if valid is not None and valid.shape != loss_a.shape:
            raise ValueError(f"valid mask has shape {tuple(valid.shape)}, the losses "
                             f"{tuple(loss_a.shape)}")
        scale = self.scale(epoch=epoch, step=step)
        lam = self.lam * scale
        la, lb = loss_a.detach(), loss_b.detach()
        a = self._peer(loss_a, self.imitation_weights(la, lb), lam, divergence, out_a, out_b, valid)
        b = self._peer(loss_b, self.imitation_weights(lb, la), lam, divergence, out_b, out_a, valid)
        return MethodLosses(a, b, scale)

    def _peer(self, loss, weight, lam, divergence, own, peer, valid) -> PeerLosses:
        weight = weight.detach()
        if weight.shape != loss.shape:
            raise ValueError(f"{self.name}: imitation_weights returned shape {tuple(weight.shape)} "
                             f"for losses of shape {tuple(loss.shape)}")
        task = masked_mean(loss, valid)
        active = lam > 0.0 and self.imitates
        with torch.set_grad_enabled(active and torch.is_grad_enabled()):
            d = divergence(own, detach(peer))
            if d.shape != loss.shape:
                raise ValueError(f"divergence returned shape {tuple(d.shape)} but the per-element "
                                 f"losses have shape {tuple(loss.shape)}; return one value per "
                                 f"loss element")
            if self.imitates:
                imitation = masked_mean(weight.to(d.dtype) * d, valid)
            else:
                imitation = torch.zeros((), dtype=task.dtype, device=task.device)
        total = task + lam * imitation if active else task
        return PeerLosses(task, imitation, total, weight, lam, masked_mean(d.detach(), valid), valid)
