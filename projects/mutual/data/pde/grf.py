"""Gaussian random fields with covariance sigma^2 (-Laplacian + tau^2 I)^-alpha, sampled in the
Laplacian's eigenbasis (vectorised over samples: one inverse transform for a whole batch)."""
from __future__ import annotations

import numpy as np


def periodic_grf_1d(rng: np.random.Generator, n: int, size: int, *, sigma2: float = 625.0,
                    tau2: float = 25.0, alpha: float = 2.0) -> np.ndarray:
    """``(n, size)`` zero-mean samples on the periodic unit interval (x_j = j / size).

    -Laplacian on [0, 1) has the real orthonormal eigenfunctions sqrt(2) cos / sin(2 pi k x)
    with eigenvalue (2 pi k)^2, so mode k gets standard deviation
    sqrt(sigma2) ((2 pi k)^2 + tau2)^(-alpha / 2) per coefficient (the FNO paper's Burgers
    initial conditions: sigma2 = 625, tau2 = 25, alpha = 2).
    """
    k = np.fft.rfftfreq(size, d=1.0 / size)
    std = np.sqrt(sigma2) * ((2 * np.pi * k) ** 2 + tau2) ** (-alpha / 2)
    std[0] = 0.0
    if size % 2 == 0:
        std[-1] = 0.0  # the Nyquist mode has no sine partner; its variance is ~1e-12 anyway
    coef = (rng.standard_normal((n, k.size)) + 1j * rng.standard_normal((n, k.size))) * std / np.sqrt(2)
    # irfft(norm="forward") = c_0 + 2 Re sum_k c_k e^{2 pi i k x}: c_k = std (a + ib) / sqrt(2)
    return np.fft.irfft(coef, n=size, norm="forward")


def neumann_grf_2d(rng: np.random.Generator, n: int, size: int, *, tau2: float = 9.0,
                   alpha: float = 2.0) -> np.ndarray:
    """``(n, size, size)`` zero-mean samples on the unit square's nodes x_j = j / (size - 1),
    in the cosine (zero-flux) eigenbasis cos(pi k1 x) cos(pi k2 y), eigenvalue
    pi^2 (k1^2 + k2^2), as the FNO paper's Darcy coefficients. Unscaled: only the sign of the
    field is used (a thresholded field)."""
    from scipy.fft import idctn

    k = np.arange(size)
    std = ((np.pi ** 2) * (k[:, None] ** 2 + k[None, :] ** 2) + tau2) ** (-alpha / 2)
    std[0, 0] = 0.0
    xi = rng.standard_normal((n, size, size)) * std
    return idctn(xi, type=1, axes=(1, 2))


def periodic_grf_2d(rng: np.random.Generator, n: int, size: int, *, tau: float = 7.0,
                    alpha: float = 2.5) -> np.ndarray:
    """``(n, size, size)`` zero-mean samples on the periodic unit square (x_j = j / size) with
    covariance sigma^2 (-Laplacian + tau^2 I)^-alpha, sigma = tau^(alpha - 1): the FNO paper's
    Navier-Stokes initial vorticity (tau = 7, alpha = 2.5). As its generator does, each mode
    k gets sqrt(2) sigma ((2 pi |k|)^2 + tau^2)^(-alpha / 2) (a + ib), a, b ~ N(0, 1), and the
    field is the real part of the inverse transform."""
    k = np.fft.fftfreq(size, d=1.0 / size)
    lam = (2 * np.pi) ** 2 * (k[:, None] ** 2 + k[None, :] ** 2) + tau ** 2
    std = np.sqrt(2.0) * tau ** (alpha - 1) * lam ** (-alpha / 2)
    std[0, 0] = 0.0
    xi = rng.standard_normal((n, size, size)) + 1j * rng.standard_normal((n, size, size))
    return np.real(np.fft.ifft2(std * xi, norm="forward"))
