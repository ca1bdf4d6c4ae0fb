"""Symmetric label noise: exactly ``round(rate * N)`` labels flipped, each to a uniformly
chosen *other* class (so the stated fraction of labels is wrong, not merely resampled)."""
from __future__ import annotations

import numpy as np


def symmetric_label_noise(y: np.ndarray, rate: float, num_classes: int,
                          rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(noisy labels, flipped mask)``; the same ``rng`` state gives the same flips."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"label noise rate must be in [0, 1), got {rate}")
    if num_classes < 2 and rate > 0:
        raise ValueError("label noise needs at least 2 classes")
    y = np.asarray(y, dtype=np.int64)
    n_flip = int(round(rate * len(y)))
    flipped = np.zeros(len(y), dtype=bool)
    flipped[rng.permutation(len(y))[:n_flip]] = True
    noisy = y.copy()
    shift = rng.integers(1, num_classes, size=n_flip) if n_flip else np.zeros(0, dtype=np.int64)
    noisy[flipped] = (y[flipped] + shift) % num_classes
    return noisy, flipped
