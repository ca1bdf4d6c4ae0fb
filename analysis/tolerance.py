"""When two floats are the same number: the one tolerance of statistics and ranks.

Metrics are computed in floating point, so 0.9028 - 0.9 and 0.8028 - 0.8 differ in the
17th digit. Compared exactly, identical differences look varying (their std is 6e-17, and
a t-test divides by it: p = 1e-28 from three seeds) and equal values rank as unequal in an
arbitrary order. Here, numbers closer than ``RTOL`` times their scale are equal: far above
float64 rounding (2e-16), far below any difference a metric means.
"""
from __future__ import annotations

import numpy as np

RTOL = 1e-9


def scale(*values) -> float:
    """The typical magnitude of the finite values given (median of |v|; 0 when none)."""
    parts = [np.abs(np.asarray(v, dtype="float64")).ravel() for v in values]
    x = np.concatenate(parts) if parts else np.empty(0)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else 0.0


def negligible(x: float, size: float) -> bool:
    """Is ``x`` rounding noise next to numbers of magnitude ``size``?"""
    return bool(abs(x) <= RTOL * abs(size))


def snap(values, size: float = 0.0) -> np.ndarray:
    """The values with near-equal ones made equal, so that ties are ties.

    Sorted neighbours closer than ``RTOL x max(|a|, |b|, size)`` are one value (the
    smallest of their run); ``size`` is the magnitude of the numbers these were computed
    from, for differences whose own size says nothing about their rounding error.
    Non-finite values are left as they are.
    """
    x = np.array(values, dtype="float64")
    idx = np.flatnonzero(np.isfinite(x))
    if idx.size < 2:
        return x
    order = idx[np.argsort(x[idx], kind="stable")]
    v = x[order]
    near = np.diff(v) <= RTOL * np.maximum(np.maximum(np.abs(v[1:]), np.abs(v[:-1])), abs(size))
    starts = np.concatenate([[True], ~near])
    x[order] = v[np.maximum.accumulate(np.where(starts, np.arange(v.size), 0))]
    return x
