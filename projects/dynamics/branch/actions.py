"""Corrective actions: what a branch may change, and how a change is held in the trainer.

An action is applied at the branch point and holds for ``branch.hold`` steps; then the
run's own learning rate, weight decay and clipper return. Keeping actions temporary stops
repeated branches from compounding (ten -20% LR cuts would leave a tenth of the LR), and
the study's question is whether a *local* correction avoids an instability. Two parts act
once at the branch point: the momentum reset and the data reorder.

:class:`Knobs` is the action in force, part of the trainer's state (checkpointed and
snapshotted with it, so a resumed or replayed run holds the same action).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from projects.dynamics.baselines import Clipper

LR_DELTAS = (-0.2, -0.1, 0.0, 0.1)
WD_FACTORS = (0.5, 1.0, 2.0)
CLIPS = ("off", "zclip", "fixed", "spam")
REORDERS = ("none", "shuffle_block")


@dataclass(frozen=True)
class Action:
    lr: float = 0.0
    wd: float = 1.0
    clip: str = "keep"
    """'keep': the run's own clipper; otherwise one of CLIPS while the action holds."""
    momentum_reset: bool = False
    reorder: str = "none"
    skip: bool = False

    @property
    def is_null(self) -> bool:
        return self == NULL

    def key(self) -> str:
        """A short stable id (the candidate's file name)."""
        return hashlib.blake2b(json.dumps(asdict(self), sort_keys=True).encode(), digest_size=4).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_config(cls, a: Any) -> "Action":
        """From an ``ActionConfig`` section (the rule of ablation A)."""
        return cls(float(a.lr), float(a.wd), a.clip, bool(a.momentum_reset), a.reorder, bool(a.skip))


NULL = Action()


def suggest(trial: Any, allow_skip: bool) -> Action:
    """The search space on an Optuna trial (categoricals: the space is a small grid)."""
    skip = bool(trial.suggest_categorical("skip", [False, True])) if allow_skip else False
    return Action(trial.suggest_categorical("lr", list(LR_DELTAS)), trial.suggest_categorical("wd", list(WD_FACTORS)),
                  trial.suggest_categorical("clip", ["keep", *CLIPS]),
                  bool(trial.suggest_categorical("momentum_reset", [False, True])),
                  trial.suggest_categorical("reorder", list(REORDERS)), skip)


def as_params(a: Action, allow_skip: bool) -> dict[str, Any]:
    """``study.enqueue_trial`` parameters of an action (no change is always proposed first)."""
    p = {"lr": a.lr, "wd": a.wd, "clip": a.clip, "momentum_reset": a.momentum_reset, "reorder": a.reorder}
    if allow_skip:
        p["skip"] = a.skip
    return p


class SpamClip(Clipper):
    """SPAM-style spike clipping without SPAM's optimiser: where g^2 > threshold * v (Adam's
    second moment), the gradient is cut to sign(g) * sqrt(threshold * v)."""

    def __init__(self, optimizer: Any, threshold: float) -> None:
        self.optimizer, self.threshold = optimizer, threshold

    def __call__(self, model: Any) -> float:
        import torch

        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")))
        for p in model.parameters():
            v = self.optimizer.state.get(p, {}).get("exp_avg_sq")
            if p.grad is None or v is None or v.shape != p.grad.shape:
                continue
            bound = (self.threshold * v).sqrt()
            mask = p.grad.abs() > bound
            p.grad[mask] = p.grad.sign()[mask] * bound[mask]
        return norm


class Knobs:
    """The action in force and until which step; neutral (``until = 0``) unless a branch set it."""

    def __init__(self, train_cfg: Any, optimizer: Any) -> None:
        self.train_cfg, self.optimizer = train_cfg, optimizer
        self.action, self.until, self.skipped = NULL, 0, 0
        self.clipper: Clipper | None = None

    def active(self, step: int) -> bool:
        return step <= self.until

    def set(self, action: Action, until: int, grad_norms: list[float]) -> None:
        self.action, self.until = action, until
        self.clipper = self._build(action.clip, grad_norms)

    def _build(self, clip: str, grad_norms: list[float]) -> Clipper | None:
        from projects.dynamics.baselines import NoClip, NormClip, ZClipper

        t = self.train_cfg
        if clip == "off":
            return NoClip()
        if clip == "fixed":
            return NormClip(t.clip_norm)
        if clip == "spam":
            return SpamClip(self.optimizer, t.spam_threshold)
        if clip == "zclip":  # warm from the recent norms: a cold ZClip would not clip within a hold
            z = ZClipper(t.zclip_alpha, t.zclip_z, t.zclip_warmup)
            finite = [g for g in grad_norms if g == g and g != float("inf")]
            if len(finite) >= 2:
                mean = sum(finite) / len(finite)
                z.z.mean, z.z.var, z.z.initialized = mean, sum((g - mean) ** 2 for g in finite) / len(finite), True
            return z
        return None

    def clip_bound(self, step: int) -> float:
        """The clipping bound in force (a feature): the fixed norm, -1 for an adaptive clipper, 0 for none."""
        name = self.action.clip if self.active(step) else "keep"
        if name == "keep":
            name = {"clip": "fixed", "zclip": "zclip", "spam": "spam"}.get(self.train_cfg.stabiliser, "off")
        return float(self.train_cfg.clip_norm) if name == "fixed" else (-1.0 if name in ("zclip", "spam") else 0.0)

    def state_dict(self) -> dict[str, Any]:
        return {"action": self.action.to_dict(), "until": self.until, "skipped": self.skipped,
                "clipper": self.clipper.state_dict() if self.clipper is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.action, self.until, self.skipped = Action(**state["action"]), state["until"], state["skipped"]
        self.clipper = self._build(self.action.clip, [])
        if self.clipper is not None and state["clipper"] is not None:
            self.clipper.load_state_dict(state["clipper"])


def apply(trainer: Any, action: Action, hold: int, reorder_seed: int, grad_norms: list[float]) -> None:
    """Put ``action`` in force at the trainer's current step (the branch point)."""
    if action.momentum_reset:
        for group in trainer.optimizer.param_groups:
            for p in group["params"]:
                m = trainer.optimizer.state.get(p, {}).get("exp_avg")
                if m is not None:
                    m.zero_()
    if action.reorder == "shuffle_block":
        trainer.sampler.manual_seed(reorder_seed)
    trainer.knobs.set(action, trainer.state.step + hold if not action.is_null else 0, grad_norms)


__all__ = ["Action", "NULL", "Knobs", "SpamClip", "suggest", "as_params", "apply", "LR_DELTAS", "WD_FACTORS",
           "CLIPS", "REORDERS"]
