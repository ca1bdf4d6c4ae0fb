"""Split-conformal calibration of the proxy's loss forecast (crepes).

Residuals y - y_hat on a calibration split the proxy was not fitted on give (i) a
two-sided interval at ``confidence`` (``crepes.ConformalRegressor``) and (ii) the
calibrated upper quantile at ``risk_level`` (``crepes.ConformalPredictiveSystem``): the
loss an action stays below with that probability. Both hold marginally, for exchangeable
rows; :func:`coverage` reports how often they did on rows held out from both splits.
"""
from __future__ import annotations

from typing import Any, Sequence


class Calibration:
    def __init__(self, confidence: float, risk_level: float) -> None:
        self.confidence, self.risk_level = confidence, risk_level
        self.residuals: list[float] = []
        self._cr: Any = None
        self._cps: Any = None

    def fit(self, residuals: Sequence[float]) -> "Calibration":
        import numpy as np
        from crepes import ConformalPredictiveSystem, ConformalRegressor

        self.residuals = [float(r) for r in residuals]
        r = np.asarray(self.residuals, dtype=float)
        self._cr, self._cps = ConformalRegressor().fit(r), ConformalPredictiveSystem().fit(r)
        return self

    def interval(self, y_hat: Sequence[float]) -> tuple[Any, Any]:
        import numpy as np

        iv = self._cr.predict_int(np.asarray(y_hat, dtype=float), confidence=self.confidence)
        return iv[:, 0], iv[:, 1]

    def quantile(self, y_hat: Sequence[float]) -> Any:
        import numpy as np

        q = self._cps.predict(np.asarray(y_hat, dtype=float), higher_percentiles=[100 * self.risk_level],
                              smoothing=False)
        return np.asarray(q, dtype=float).reshape(-1)

    def state_dict(self) -> dict[str, Any]:
        return {"confidence": self.confidence, "risk_level": self.risk_level, "residuals": list(self.residuals)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.confidence, self.risk_level = state["confidence"], state["risk_level"]
        if state["residuals"]:
            self.fit(state["residuals"])


def coverage(y: Sequence[float], lo: Sequence[float], hi: Sequence[float], q: Sequence[float]) -> dict[str, float]:
    """Empirical coverage of the interval and of the upper quantile (NaN without rows)."""
    n = len(y)
    if not n:
        return {"interval": float("nan"), "quantile": float("nan"), "n": 0.0}
    return {"interval": sum(a <= v <= b for v, a, b in zip(y, lo, hi)) / n,
            "quantile": sum(v <= b for v, b in zip(y, q)) / n, "n": float(n)}


__all__ = ["Calibration", "coverage"]
