"""Real partial rollouts from a branch point and the outcomes the proxy learns to predict.

A rollout restores the branch point's full state (RNGs and data sampler included), puts an
action in force and takes N real steps, so two rollouts differ only by their action: the
same seed manifest gives the same batches. With the null action it is the original run.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from projects.dynamics.proxy import features
from projects.dynamics.branch.actions import Action, apply


@dataclass
class Outcome:
    loss_at_n: float
    """Mean training loss of the last 3 steps of the horizon (nats/token)."""
    diverged: bool
    """An instability event started within the horizon, or a loss was not finite."""
    recovery: float
    """Steps until the loss is back within the branch point's recovery band for ``calm``
    steps in a row (0: it never left it); the horizon N when it does not come back."""

    def score(self, alpha: float, beta: float, gamma: float) -> float:
        return -alpha * self.loss_at_n - beta * float(self.diverged) - gamma * self.recovery


def outcome(losses: Sequence[float], band: float, new_events: int, calm: int) -> Outcome:
    n = len(losses)
    capped = [x if math.isfinite(x) else features.CAP for x in losses]
    tail = capped[-min(3, n):]
    inside = [x <= band for x in capped]
    recovery = float(n)
    for j in range(n - calm + 1):
        if all(inside[j:j + calm]):
            recovery = float(j)
            break
    return Outcome(sum(tail) / len(tail), new_events > 0 or any(not math.isfinite(x) for x in losses), recovery)


@dataclass
class Rollout:
    action: Action
    outcome: Outcome
    metrics: list[dict[str, float]]
    rows: list[dict[str, float]]
    kept: dict | None = None
    """The trainer's state after ``keep_after`` steps (the step the main run adopts)."""
    cpu_s: float = 0.0
    steps: int = 0
    log: list[str] = field(default_factory=list)


def rollout(trainer: Any, snap: dict, action: Action, steps: int, *, hold: int, reorder_seed: int,
            prev_rows: list[dict[str, float]], keep_after: int | None = None) -> Rollout:
    """``steps`` real steps from ``snap`` under ``action``; the trainer is left at the end."""
    t0 = time.process_time()
    trainer.restore(snap)
    band = prev_rows[-1]["band"] if prev_rows else math.inf
    grad_norms = [math.exp(r["log_grad_norm"]) for r in prev_rows[-trainer.cfg.branch.window:]]
    apply(trainer, action, hold, reorder_seed, grad_norms)
    n_events = len(trainer.events.events)
    out = Rollout(action, Outcome(math.nan, False, math.nan), [], [])
    prev = prev_rows[-1] if prev_rows else None
    for i in range(steps):
        m = trainer.step()
        prev = features.row(trainer, m, prev, reset=(i == 0 and action.momentum_reset))
        out.metrics.append(m)
        out.rows.append(prev)
        out.log.append(f"step {trainer.state.step} loss {m['loss.train']:.5f} grad_norm {m['diag.grad_norm']:.4f} "
                       f"lr {m['diag.lr']:.6g} event {int(m['dynamics.event'])}")
        if keep_after is not None and i + 1 == keep_after:
            out.kept = trainer.snapshot()
    losses = [m["loss.train"] for m in out.metrics]
    out.outcome = outcome(losses, band, len(trainer.events.events) - n_events, trainer.cfg.events.calm)
    out.cpu_s, out.steps = time.process_time() - t0, steps
    return out


__all__ = ["Outcome", "Rollout", "outcome", "rollout"]
