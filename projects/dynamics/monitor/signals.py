"""The monitor's raw signals and the trailing z-score that puts them on one scale.

Every object here keeps plain Python numbers (or small torch modules) and has
``state_dict``/``load_state_dict``: the monitor is part of the trainer's checkpoint, so a
resumed run's index continues exactly where the killed one's stopped.
"""
from __future__ import annotations

import math
from collections import deque
from typing import Any

HALF_NORMAL_MEAN = math.sqrt(2 / math.pi)
Z_CLIP = 10.0  # one absurd value must not dominate the index for a whole window


class ZScore:
    """z of a value against the trailing ``window`` values before it (0 during warm-up)."""

    def __init__(self, window: int, warmup: int) -> None:
        self.window, self.warmup = window, max(2, warmup)
        self.values: deque[float] = deque(maxlen=window)

    def __call__(self, x: float) -> float:
        z = 0.0
        n = len(self.values)
        if n >= self.warmup and math.isfinite(x):
            mean = sum(self.values) / n
            std = math.sqrt(sum((v - mean) ** 2 for v in self.values) / (n - 1))
            z = max(-Z_CLIP, min(Z_CLIP, (x - mean) / (std + 1e-8 * (1 + abs(mean)))))
        if math.isfinite(x):
            self.values.append(x)
        else:
            z = Z_CLIP
        return z

    def state_dict(self) -> dict[str, Any]:
        return {"values": list(self.values)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.values = deque(state["values"], maxlen=self.window)


class Volatility:
    """Short-term volatility: the loss residual against its EMA and the relative change of
    the gradient norm, each z-scored; the signal is their mean."""

    def __init__(self, ema_decay: float, window: int, warmup: int) -> None:
        self.decay = ema_decay
        self.ema: float | None = None
        self.prev_grad: float | None = None
        self.z_resid, self.z_grad = ZScore(window, warmup), ZScore(window, warmup)
        self.last_resid_z = 0.0

    def __call__(self, loss: float, grad_norm: float) -> float:
        resid = math.nan if not math.isfinite(loss) else (0.0 if self.ema is None else loss - self.ema)
        if math.isfinite(loss):
            self.ema = loss if self.ema is None else self.decay * self.ema + (1 - self.decay) * loss
        change = 0.0 if self.prev_grad is None else abs(grad_norm - self.prev_grad) / max(self.prev_grad, 1e-12)
        if math.isfinite(grad_norm):
            self.prev_grad = grad_norm
        self.last_resid_z = self.z_resid(resid)
        return 0.5 * (self.last_resid_z + self.z_grad(change if math.isfinite(grad_norm) else math.nan))

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema, "prev_grad": self.prev_grad, "last_resid_z": self.last_resid_z,
                "z_resid": self.z_resid.state_dict(), "z_grad": self.z_grad.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema, self.prev_grad, self.last_resid_z = state["ema"], state["prev_grad"], state["last_resid_z"]
        self.z_resid.load_state_dict(state["z_resid"])
        self.z_grad.load_state_dict(state["z_grad"])


class InternalEntropy:
    """Internal-state entropy: attention entropy and the key layer's activation entropy.

    Either direction is news (attention collapsing onto one token, or going uniform), so
    the signal is the mean *absolute* z-score of the two, minus sqrt(2/pi) (the mean of |z|
    under noise) so that a calm run averages 0 like the other signals."""

    def __init__(self, window: int, warmup: int) -> None:
        self.z_attn, self.z_act = ZScore(window, warmup), ZScore(window, warmup)

    def __call__(self, attn_entropy: float, act_entropy: float) -> float:
        return 0.5 * (abs(self.z_attn(attn_entropy)) + abs(self.z_act(act_entropy))) - HALF_NORMAL_MEAN

    def state_dict(self) -> dict[str, Any]:
        return {"z_attn": self.z_attn.state_dict(), "z_act": self.z_act.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.z_attn.load_state_dict(state["z_attn"])
        self.z_act.load_state_dict(state["z_act"])
