"""A multi-channel series whose structure is known: the tests check each promise.

Channel ``c`` at step ``t`` (regime ``k``: the number of change points at or before ``t``)::

    x_c(t) = level_k,c + trend * t / T + amp_c * scale^k * (sin(2 pi t / P + phi_c)
             + 0.5 sin(4 pi t / P + 2 phi_c)) + e_c(t)

with ``level_k,c = k * regime_level * sign_c``, amplitudes ``amp_c`` in [0.75, 1.25], phases
``phi_c`` and signs drawn once per channel from the seed, and ``e_c`` AR(1) noise of standard
deviation ``noise``. The period is exactly ``P`` (the harmonic divides it); the trend rises by
``trend`` over the series; at each change point the level jumps and the amplitude grows.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SyntheticSeries:
    values: np.ndarray
    """(T, C) float64."""
    change_steps: list[int]
    """The first step of each new regime."""
    period: int


def generate(rng: np.random.Generator, *, length: int, channels: int, period: int, trend: float,
             noise: float, ar: float, change_points: list[float], regime_level: float,
             regime_scale: float) -> SyntheticSeries:
    """The series (see the module doc); every random draw comes from ``rng``."""
    t = np.arange(length, dtype=np.float64)
    amp = rng.uniform(0.75, 1.25, channels)
    phase = rng.uniform(0.0, 2 * np.pi, channels)
    sign = rng.choice([-1.0, 1.0], channels)
    steps = [int(round(p * length)) for p in change_points]
    regime = np.searchsorted(np.asarray(steps), t, side="right").astype(np.float64)
    angle = 2 * np.pi * t[:, None] / period + phase[None, :]
    season = np.sin(angle) + 0.5 * np.sin(2 * angle)
    x = (regime[:, None] * regime_level * sign[None, :] + trend * t[:, None] / length
         + amp[None, :] * regime_scale ** regime[:, None] * season)
    e = np.empty((length, channels))
    z = rng.standard_normal((length, channels)) * noise
    e[0] = z[0]
    innov = np.sqrt(1.0 - ar * ar)
    for i in range(1, length):
        e[i] = ar * e[i - 1] + innov * z[i]
    return SyntheticSeries(x + e, steps, period)
