"""2-D incompressible Navier-Stokes in vorticity form on the periodic unit square (the FNO
paper's set-up, Li et al. 2021):

    w_t + u . grad w = nu Laplacian w + f,   u = (psi_y, -psi_x),   -Laplacian psi = w,
    f(x, y) = 0.1 (sin(2 pi (x + y)) + cos(2 pi (x + y))).

Pseudo-spectral on ``size`` x ``size`` points x_j = j / size (axis 0 is x, axis 1 is y), the
advection term 2/3-rule dealiased. In time, Crank-Nicolson for the viscous term (stable at any
step on any grid) and, for the advection and the forcing, Heun's predictor-corrector (second
order; the paper's solver takes an explicit Euler step at dt = 1e-4, which costs 100 times the
steps here). With ``k`` in cycles per unit length, a mode decays as exp(-nu (2 pi |k|)^2 t)
without forcing: the known answer the tests check.
"""
from __future__ import annotations

import numpy as np


def _wavenumbers(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(k_x, k_y) on the rfft2 layout (size, size // 2 + 1), in cycles per unit length."""
    kx = np.fft.fftfreq(size, d=1.0 / size)[:, None]
    ky = np.fft.rfftfreq(size, d=1.0 / size)[None, :]
    return np.broadcast_to(kx, (size, size // 2 + 1)), np.broadcast_to(ky, (size, size // 2 + 1))


def forcing(size: int, amplitude: float = 0.1) -> np.ndarray:
    x = np.arange(size) / size
    s = 2 * np.pi * (x[:, None] + x[None, :])
    return amplitude * (np.sin(s) + np.cos(s))


class _Spectral:
    """The operators of one grid: Laplacian eigenvalues, derivatives, dealiasing."""

    def __init__(self, size: int):
        kx, ky = _wavenumbers(size)
        self.size = size
        self.ikx, self.iky = 2j * np.pi * kx, 2j * np.pi * ky
        self.lap = (2 * np.pi) ** 2 * (kx ** 2 + ky ** 2)                 # -Laplacian's eigenvalues
        self.inv_lap = np.where(self.lap > 0, 1.0 / np.where(self.lap > 0, self.lap, 1.0), 0.0)
        self.dealias = (np.abs(kx) < size / 3) & (np.abs(ky) < size / 3)

    def advection(self, w_h: np.ndarray) -> np.ndarray:
        """FFT of u . grad w, dealiased."""
        psi_h = w_h * self.inv_lap
        u, v = self.field(self.iky * psi_h), self.field(-self.ikx * psi_h)
        adv = u * self.field(self.ikx * w_h) + v * self.field(self.iky * w_h)
        return np.fft.rfft2(adv) * self.dealias

    def field(self, a_h: np.ndarray) -> np.ndarray:
        return np.fft.irfft2(a_h, s=(self.size, self.size))


def solve_navier_stokes(w0: np.ndarray, *, viscosity: float, time: float, dt: float = 1e-2,
                        force: np.ndarray | float | None = None) -> np.ndarray:
    """w(., time) for each ``(size, size)`` vorticity field of ``w0`` ((n, size, size)); float64.
    ``force``: a field on the grid, 0, or None for the paper's forcing."""
    size = w0.shape[-1]
    ops = _Spectral(size)
    f = forcing(size) if force is None else np.broadcast_to(np.asarray(force, dtype=np.float64), (size, size))
    f_h = np.fft.rfft2(f)
    steps = max(1, int(round(time / dt)))
    h = time / steps
    explicit, implicit = 1 - 0.5 * h * viscosity * ops.lap, 1 / (1 + 0.5 * h * viscosity * ops.lap)
    w_h = np.fft.rfft2(w0)
    for _ in range(steps):
        rhs = f_h - ops.advection(w_h)
        guess = (explicit * w_h + h * rhs) * implicit
        w_h = (explicit * w_h + 0.5 * h * (rhs + f_h - ops.advection(guess))) * implicit
    return np.fft.irfft2(w_h, s=(size, size))


def generate_navier_stokes(rng: np.random.Generator, n: int, *, fine_resolution: int, viscosity: float,
                           time: float, dt: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pairs (w(0), w(time)) on the fine grid, float64 (n, fine, fine) each."""
    from projects.mutual.data.pde.grf import periodic_grf_2d

    w0 = periodic_grf_2d(rng, n, fine_resolution)
    return w0, solve_navier_stokes(w0, viscosity=viscosity, time=time, dt=dt)
