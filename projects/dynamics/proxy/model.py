"""The cheap proxy: (state features, action) -> E[loss@N], P(divergence by +N), recovery time.

A two-layer MLP (LayerNorm + GELU) with three heads, fitted full-batch with Adam on the
CPU in well under a second for the log sizes of a run (hundreds to a few thousand rows).
It predicts the loss *relative to* the event rule's EMA at the branch point: the level
of the loss is known, the proxy only has to learn what the action and the state's
trend do to it. Rows are split deterministically into fit / calibration / test
(60/20/20): the calibration split feeds :class:`~.conformal.Calibration`, the test split
measures the calibration's coverage.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Sequence

from projects.dynamics.branch.actions import CLIPS, Action
from projects.dynamics.proxy.conformal import Calibration, coverage

CLIP_CODES = ("keep", *CLIPS)


def encode(a: Action) -> list[float]:
    """Action -> 10 inputs: lr delta, log2 wd factor, clip one-hot (5), reset, reorder, skip."""
    import math

    return [a.lr * 5, math.log2(a.wd), *[float(a.clip == c) for c in CLIP_CODES], float(a.momentum_reset),
            float(a.reorder != "none"), float(a.skip)]


def action_of(row: dict[str, Any]) -> Action:
    return Action(row["a_lr"], row["a_wd"], row["a_clip"], bool(row["a_momentum_reset"]), row["a_reorder"],
                  bool(row["a_skip"]))


def _split(row: dict[str, Any]) -> int:
    """0 fit, 1 calibration, 2 test: a hash of the row's identity, so adding rows never moves old ones."""
    key = f"{row['source']}:{row['run_seed']}:{row['episode']}:{row['step']}:{action_of(row).key()}"
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=2).digest(), "little") % 10
    return 0 if h < 6 else 1 if h < 8 else 2


@dataclass
class Prediction:
    loss: Any
    lo: Any
    hi: Any
    q: Any
    risk: Any
    recovery: Any

    def scores(self, alpha: float, beta: float, gamma: float) -> Any:
        return -alpha * self.loss - beta * self.risk - gamma * self.recovery


class Proxy:
    def __init__(self, n_features: int, horizon: int, hidden: int = 64, epochs: int = 150, seed: int = 0,
                 confidence: float = 0.9, risk_level: float = 0.9) -> None:
        self.n_in, self.horizon, self.hidden, self.epochs, self.seed = n_features + 10, horizon, hidden, epochs, seed
        self.calibration = Calibration(confidence, risk_level)
        self.net: Any = None
        self.mean: Any = None
        self.std: Any = None
        self.report: dict[str, float] = {}

    def _build(self) -> Any:
        import torch
        from torch import nn

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            h = self.hidden
            return nn.Sequential(nn.Linear(self.n_in, h), nn.LayerNorm(h), nn.GELU(), nn.Linear(h, h),
                                 nn.LayerNorm(h), nn.GELU(), nn.Linear(h, 3))

    def _inputs(self, feats: Sequence[Sequence[float]], actions: Sequence[Action]) -> Any:
        import torch

        x = torch.tensor([list(f) + encode(a) for f, a in zip(feats, actions)], dtype=torch.float32)
        return (x - self.mean) / self.std

    def fit(self, rows: Sequence[dict[str, Any]]) -> dict[str, float]:
        """Fit on the fit split, calibrate on the calibration split; returns the test coverage."""
        import torch

        parts = [[r for r in rows if _split(r) == i] for i in range(3)]
        train, cal, test = parts if len(parts[1]) >= 10 else (list(rows), list(rows), parts[2])
        raw = torch.tensor([list(r["features"]) + encode(action_of(r)) for r in train], dtype=torch.float32)
        self.mean, self.std = raw.mean(0), raw.std(0).clamp_min(1e-6)
        y = torch.tensor([[r["y_loss"] - r["ema"], float(r["y_diverged"]), r["y_recovery"] / self.horizon]
                          for r in train], dtype=torch.float32)
        self.net = self._build()
        opt = torch.optim.Adam(self.net.parameters(), lr=3e-3, weight_decay=1e-4)
        x = (raw - self.mean) / self.std
        for _ in range(self.epochs):
            out = self.net(x)
            loss = torch.nn.functional.mse_loss(out[:, 0], y[:, 0]) \
                + torch.nn.functional.binary_cross_entropy_with_logits(out[:, 1], y[:, 1]) \
                + torch.nn.functional.mse_loss(out[:, 2], y[:, 2])
            opt.zero_grad()
            loss.backward()
            opt.step()
        pred = self._raw([r["features"] for r in cal], [action_of(r) for r in cal], [r["ema"] for r in cal])
        self.calibration.fit([r["y_loss"] - p for r, p in zip(cal, pred[:, 0].tolist())])
        self.report = {"rows": float(len(rows)), "fit_rows": float(len(train)), "cal_rows": float(len(cal)),
                       "fit_loss": float(loss.detach())}
        if test:
            p = self.predict([r["features"] for r in test], [action_of(r) for r in test], [r["ema"] for r in test])
            cov = coverage([r["y_loss"] for r in test], p.lo, p.hi, p.q)
            self.report.update({"test_rows": cov["n"], "coverage.interval": float(cov["interval"]),
                                "coverage.quantile": float(cov["quantile"])})
        return self.report

    def _raw(self, feats: Sequence[Sequence[float]], actions: Sequence[Action], ema: Sequence[float]) -> Any:
        import torch

        with torch.no_grad():
            out = self.net(self._inputs(feats, actions)).double()
        out[:, 0] += torch.tensor(list(ema), dtype=torch.float64)
        out[:, 1] = torch.sigmoid(out[:, 1])
        out[:, 2] = out[:, 2].clamp(0, 1) * self.horizon
        return out.numpy()

    def predict(self, feats: Sequence[Sequence[float]], actions: Sequence[Action], ema: Sequence[float]) -> Prediction:
        out = self._raw(feats, actions, ema)
        lo, hi = self.calibration.interval(out[:, 0])
        return Prediction(out[:, 0], lo, hi, self.calibration.quantile(out[:, 0]), out[:, 1], out[:, 2])

    def n_params(self) -> int:
        return sum(p.numel() for p in self.net.parameters()) if self.net is not None else 0

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict() if self.net is not None else None, "mean": self.mean, "std": self.std,
                "calibration": self.calibration.state_dict(), "report": dict(self.report)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.mean, self.std, self.report = state["mean"], state["std"], dict(state["report"])
        self.calibration.load_state_dict(state["calibration"])
        if state["net"] is not None:
            self.net = self._build()
            self.net.load_state_dict(state["net"])


__all__ = ["Proxy", "Prediction", "encode", "action_of"]
