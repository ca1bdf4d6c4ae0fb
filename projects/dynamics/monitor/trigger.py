"""The trigger: fires when a score rises above ``tau``, re-arms only below ``tau_low``.

Without hysteresis a spike that keeps the index above tau for ten steps would be ten
triggers (and ten branch simulations in the next issue); with it, it is one.
"""
from __future__ import annotations

from typing import Any


class HysteresisTrigger:
    def __init__(self, tau: float, tau_low: float) -> None:
        if tau_low > tau:
            raise ValueError(f"tau_low ({tau_low}) must not exceed tau ({tau})")
        self.tau, self.tau_low = tau, tau_low
        self.armed = True

    def __call__(self, score: float) -> bool:
        if self.armed and score > self.tau:
            self.armed = False
            return True
        if not self.armed and score < self.tau_low:
            self.armed = True
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"armed": self.armed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.armed = bool(state["armed"])
