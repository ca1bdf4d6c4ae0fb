"""The learning-rate factor per step: base schedule, the cosine baseline, injected spikes.

A pure function of the step (wrapped in ``LambdaLR``), so a resumed run recomputes the
same LR from the restored scheduler step: nothing about spikes needs to be checkpointed.
"""
from __future__ import annotations

import math
from typing import Any, Callable


def lr_factor(train: Any, instability: Any) -> Callable[[int], float]:
    cosine = train.schedule == "cosine" or train.stabiliser == "cosine"
    warmup = train.cosine_warmup if train.stabiliser == "cosine" else train.warmup
    spikes = sorted(instability.lr_spikes)
    steps, floor = max(1, train.steps), train.min_lr_ratio

    def factor(i: int) -> float:  # LambdaLR counts from 0: i = index of the next step - 1
        step = i + 1
        f = min(1.0, step / warmup) if warmup > 0 else 1.0
        if cosine:
            frac = min(1.0, max(0, step - warmup) / max(1, steps - warmup))
            f *= floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac))
        if any(s <= step < s + instability.lr_spike_len for s in spikes):
            f *= instability.lr_spike_factor
        return f
    return factor
