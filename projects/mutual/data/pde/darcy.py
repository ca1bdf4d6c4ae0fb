"""Darcy flow -div(a grad u) = f on the unit square, u = 0 on the boundary: five-point finite
differences on the nodes x_j = j / (size - 1), face coefficients the harmonic mean of the two
nodes' a (exact for piecewise-constant a across a face), one sparse LU solve per sample."""
from __future__ import annotations

import numpy as np


def darcy_matrix(a: np.ndarray):
    """The FD operator on the interior nodes of one ``(size, size)`` coefficient field."""
    import scipy.sparse as sp

    size = a.shape[0]
    h = 1.0 / (size - 1)
    m = size - 2
    hx = 2 * a[1:, :] * a[:-1, :] / (a[1:, :] + a[:-1, :])  # faces between rows i and i+1
    hy = 2 * a[:, 1:] * a[:, :-1] / (a[:, 1:] + a[:, :-1])  # faces between columns j and j+1
    north, south = hx[:-1, 1:-1], hx[1:, 1:-1]          # face above / below interior node (i, j)
    west, east = hy[1:-1, :-1], hy[1:-1, 1:]
    diag = (north + south + west + east).ravel()
    idx = np.arange(m * m).reshape(m, m)
    rows = [idx.ravel()]
    cols = [idx.ravel()]
    vals = [diag]
    for coef, di, dj in ((north, -1, 0), (south, 1, 0), (west, 0, -1), (east, 0, 1)):
        ii, jj = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
        ni, nj = ii + di, jj + dj
        ok = (ni >= 0) & (ni < m) & (nj >= 0) & (nj < m)
        rows.append(idx[ii[ok], jj[ok]])
        cols.append(idx[ni[ok], nj[ok]])
        vals.append(-coef[ok])
    mat = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(m * m, m * m))
    return mat / (h * h)


def solve_darcy(a: np.ndarray, f: np.ndarray | float = 1.0) -> np.ndarray:
    """u on all ``(size, size)`` nodes (zero on the boundary) for coefficient ``a`` and source
    ``f`` (a scalar or a field on the nodes)."""
    from scipy.sparse.linalg import spsolve

    size = a.shape[0]
    rhs = np.broadcast_to(np.asarray(f, dtype=np.float64), a.shape)[1:-1, 1:-1].ravel()
    u = np.zeros_like(a, dtype=np.float64)
    u[1:-1, 1:-1] = spsolve(darcy_matrix(a.astype(np.float64)), rhs, permc_spec="MMD_AT_PLUS_A").reshape(size - 2, size - 2)
    return u


def threshold_coefficient(field: np.ndarray, high: float = 12.0, low: float = 3.0) -> np.ndarray:
    """The FNO paper's piecewise-constant coefficient: ``high`` where the GRF is >= 0."""
    return np.where(field >= 0, high, low)


def generate_darcy(rng: np.random.Generator, n: int, *, fine_resolution: int, high: float = 12.0,
                   low: float = 3.0, progress=None) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pairs (a, u) on the fine ``(size, size)`` node grid, float64; ``progress`` is
    called with the number of samples solved so far."""
    from projects.mutual.data.pde.grf import neumann_grf_2d

    a = threshold_coefficient(neumann_grf_2d(rng, n, fine_resolution), high, low)
    u = np.empty_like(a)
    for i in range(n):
        u[i] = solve_darcy(a[i])
        if progress is not None:
            progress(1)
    return a, u
