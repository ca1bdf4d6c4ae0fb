"""State features at a branch point: what the trainer looked like over the last W steps.

Each step leaves one :func:`row` of raw signals; the features of step s are, per signal,
its value at s, its EMA over the trailing W rows and its delta over them (value at s minus
value W steps before). The EMA says where the run is, the delta where it is heading:
a proxy that sees only the current loss cannot tell a spike's rising edge from its fall.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

BASE = ("loss", "loss_gap", "log_grad_norm", "lr", "wd", "clip_bound", "momentum_reset", "noisy",
        "batch_unique", "attn_entropy", "act_entropy")
"""Raw signals of every config; ``layer{i}_entropy`` (one per block) follow them."""
CAP = 20.0
"""A non-finite or huge reading counts as this (a diverged loss is 'very high', not missing)."""


def signals(layers: int) -> tuple[str, ...]:
    return BASE + tuple(f"layer{i}_entropy" for i in range(layers))


def feature_names(layers: int) -> list[str]:
    return [f"{s}{suffix}" for s in signals(layers) for suffix in ("", "_ema", "_delta")]


def _finite(x: float) -> float:
    return x if math.isfinite(x) and abs(x) < CAP else math.copysign(CAP, x) if x == x else CAP


def row(trainer: Any, metrics: dict[str, float], previous: dict[str, float] | None,
        reset: bool = False) -> dict[str, float]:
    """The raw signals of the step just taken (``metrics`` is what ``Trainer.step`` returned).

    ``ema`` and ``band`` (the event rule's EMA and recovery level) ride along for the
    outcomes; they are not features."""
    step = trainer.state.step
    e = trainer.events
    ema = e.ema if e.ema is not None else metrics["loss.train"]
    std = e._std() if len(e.resid) >= 2 else 0.0
    wd = trainer.optimizer.param_groups[0].get("weight_decay", 0.0)
    held = trainer.knobs.active(step)
    g = metrics["diag.grad_norm"]
    r = {"loss": metrics["loss.train"], "loss_gap": metrics["loss.train"] - ema,
         "log_grad_norm": math.log(max(g, 1e-12)) if g == g else CAP,
         "lr": metrics["diag.lr"] * 1e3, "wd": wd * (trainer.knobs.action.wd if held else 1.0),
         "clip_bound": trainer.knobs.clip_bound(step), "momentum_reset": float(reset),
         "noisy": metrics["diag.noisy_batch"], "batch_unique": metrics.get("diag.batch.unique", 0.0),
         "attn_entropy": metrics["dynamics.attention_entropy"], "act_entropy": metrics["dynamics.activation_entropy"]}
    for i in range(trainer.cfg.model.layers):
        key = f"diag.act.layer{i}.entropy"
        r[f"layer{i}_entropy"] = metrics.get(key, previous.get(f"layer{i}_entropy", 0.0) if previous else 0.0)
    r = {k: _finite(float(v)) for k, v in r.items()}
    r["ema"], r["band"] = ema, ema + e.k_recover * std
    r["step"] = float(step)
    return r


def vector(rows: Sequence[dict[str, float]], window: int, layers: int) -> list[float]:
    """Features of the last row given the rows before it (at least one row)."""
    tail = list(rows[-window:])
    a = 2.0 / (window + 1)
    out = []
    for s in signals(layers):
        values = [r[s] for r in tail]
        ema = values[0]
        for v in values[1:]:
            ema = (1 - a) * ema + a * v
        out += [values[-1], ema, values[-1] - values[0]]
    return out


__all__ = ["BASE", "signals", "feature_names", "row", "vector"]
