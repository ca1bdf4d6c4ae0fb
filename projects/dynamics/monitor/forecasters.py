"""Predictive disagreement: K small GRU forecasters trained online on the loss history.

Each forecaster reads the last ``history`` log-losses (relative to the newest) and predicts
the change of the log-loss ``horizon`` steps ahead. They start from different random
weights (one generator of their own, never the global RNG, so the trainer's future does not
depend on whether the monitor runs) and take one Adam step per training step on the
newest (history, outcome) pair that has resolved. When the dynamics leave the regime
they were fitted on, their forecasts diverge: the variance across them is the signal.
"""
from __future__ import annotations

import copy
import math
from collections import deque
from typing import Any

import torch
from torch import nn


class BatchedGRU(nn.Module):
    """K independent one-layer GRUs (input size 1) run as one batched computation.

    Written out with ``bmm`` instead of K ``nn.GRU`` modules: the K models cost about as
    much as one, which keeps the monitor's overhead a small share of a training step."""

    def __init__(self, k: int, hidden: int, gen: torch.Generator) -> None:
        super().__init__()
        bound = 1 / math.sqrt(hidden)

        def init(*shape: int) -> nn.Parameter:
            return nn.Parameter((torch.rand(shape, generator=gen) * 2 - 1) * bound)
        self.w_in, self.b_in = init(k, 1, 3 * hidden), init(k, 1, 3 * hidden)
        self.w_h, self.b_h = init(k, hidden, 3 * hidden), init(k, 1, 3 * hidden)
        self.w_out, self.b_out = init(k, hidden, 1), init(k, 1, 1)
        self.hidden = hidden

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """seqs (B, T) -> (K, B): every model reads every sequence."""
        k, (b, steps) = self.w_in.shape[0], seqs.shape
        h = seqs.new_zeros(k, b, self.hidden)
        x = seqs.t().reshape(steps, 1, b, 1).expand(steps, k, b, 1)
        for i in range(steps):
            gi = x[i] * self.w_in + self.b_in                     # (K, B, 3H)
            gh = torch.baddbmm(self.b_h, h, self.w_h)
            r, z, n = gi.chunk(3, -1), gh.chunk(3, -1), None
            reset, update = torch.sigmoid(r[0] + z[0]), torch.sigmoid(r[1] + z[1])
            n = torch.tanh(r[2] + reset * z[2])
            h = (1 - update) * n + update * h
        return torch.baddbmm(self.b_out, h, self.w_out).squeeze(-1)


class ForecasterEnsemble:
    def __init__(self, k: int, history: int, horizon: int, hidden: int, lr: float, seed: int) -> None:
        self.history, self.horizon = history, horizon
        self.model = BatchedGRU(k, hidden, torch.Generator().manual_seed(7919 * (seed + 1)))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.logs: deque[float] = deque(maxlen=history + horizon)

    def _window(self, seq: list[float]) -> torch.Tensor:
        t = torch.tensor(seq, dtype=torch.float32)
        return t - t[-1]

    def __call__(self, loss: float) -> float:
        """Feed the newest loss; returns log-variance of the K forecasts (nan while warming up)."""
        value = math.log(max(loss, 1e-8)) if math.isfinite(loss) else (self.logs[-1] + 5 if self.logs else 0.0)
        self.logs.append(value)
        logs = list(self.logs)
        if len(logs) < self.history + self.horizon:
            return math.nan
        past = self._window(logs[:self.history])
        now = self._window(logs[-self.history:])
        target = torch.tensor(logs[-1] - logs[self.history - 1])
        out = self.model(torch.stack([past, now]))   # (K, 2): fit on the resolved pair, forecast now
        self.opt.zero_grad(set_to_none=True)
        (out[:, 0] - target).square().sum().backward()
        self.opt.step()
        preds = out[:, 1].detach()
        return math.log(float(preds.var()) + 1e-12) if len(preds) > 1 else 0.0

    def state_dict(self) -> dict[str, Any]:
        # Copies: torch hands out live tensors, and a snapshot must not move with the model.
        return copy.deepcopy({"model": self.model.state_dict(), "opt": self.opt.state_dict(),
                              "logs": list(self.logs)})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["opt"])
        self.logs = deque(state["logs"], maxlen=self.history + self.horizon)
