"""The uncertainty index: index = w1 * volatility + w2 * entropy + w3 * disagreement.

:class:`Monitor` owns the three signals, the index trigger and the single-signal trigger
on the loss residual alone (the study's ablation D), and returns everything as
``dynamics.*`` metrics each step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from projects.dynamics.monitor.signals import InternalEntropy, Volatility, ZScore
from projects.dynamics.monitor.trigger import HysteresisTrigger


@dataclass
class Observation:
    """What the trainer hands the monitor after each step."""

    loss: float
    grad_norm: float
    attn_entropy: float
    act_entropy: float


class Monitor:
    def __init__(self, cfg: Any, seed: int = 0) -> None:
        from projects.dynamics.monitor.forecasters import ForecasterEnsemble

        m = cfg
        self.weights = (m.w_volatility, m.w_entropy, m.w_disagreement)
        self.volatility = Volatility(m.ema_decay, m.window, m.warmup)
        self.entropy = InternalEntropy(m.window, m.warmup)
        self.forecasters = ForecasterEnsemble(m.forecasters, m.history, m.horizon, m.hidden,
                                              m.forecaster_lr, seed) if m.w_disagreement else None
        self.z_disagreement = ZScore(m.window, m.warmup)
        self.trigger = HysteresisTrigger(m.tau, m.tau_low)
        self.loss_trigger = HysteresisTrigger(m.loss_tau, m.tau_low)

    def __call__(self, obs: Observation) -> dict[str, float]:
        vol = self.volatility(obs.loss, obs.grad_norm)
        ent = self.entropy(obs.attn_entropy, obs.act_entropy)
        raw = self.forecasters(obs.loss) if self.forecasters is not None else math.nan
        dis = self.z_disagreement(raw) if math.isfinite(raw) else 0.0
        w1, w2, w3 = self.weights
        index = w1 * vol + w2 * ent + w3 * dis
        loss_z = self.volatility.last_resid_z
        return {"dynamics.index": index, "dynamics.volatility": vol, "dynamics.entropy": ent,
                "dynamics.disagreement": dis, "dynamics.disagreement.raw": raw if math.isfinite(raw) else 0.0,
                "dynamics.trigger": float(self.trigger(index)),
                "dynamics.loss_z": loss_z, "dynamics.trigger_loss": float(self.loss_trigger(loss_z))}

    def state_dict(self) -> dict[str, Any]:
        return {"volatility": self.volatility.state_dict(), "entropy": self.entropy.state_dict(),
                "forecasters": self.forecasters.state_dict() if self.forecasters else None,
                "z_disagreement": self.z_disagreement.state_dict(),
                "trigger": self.trigger.state_dict(), "loss_trigger": self.loss_trigger.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.volatility.load_state_dict(state["volatility"])
        self.entropy.load_state_dict(state["entropy"])
        if self.forecasters is not None:
            self.forecasters.load_state_dict(state["forecasters"])
        self.z_disagreement.load_state_dict(state["z_disagreement"])
        self.trigger.load_state_dict(state["trigger"])
        self.loss_trigger.load_state_dict(state["loss_trigger"])
