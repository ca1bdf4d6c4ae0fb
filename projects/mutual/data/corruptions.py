"""Test-time input corruptions in the style of CIFAR-10-C, generated on the fly.

Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" (ICLR 2019); the parameters are those of their CIFAR-10-C script, on images
in [0, 1], and every result is clipped to [0, 1]:

==============  ==========================================  ===============================
kind            what                                        severity 1 .. 5
==============  ==========================================  ===============================
gaussian_noise  ``x + N(0, c^2)`` per pixel and channel     c = 0.04, 0.06, 0.08, 0.09, 0.10
gaussian_blur   Gaussian filter, std ``c`` pixels (kernel   c = 0.4, 0.6, 0.7, 0.8, 1.0
                radius ``ceil(4 c)``, edges replicated as
                scikit-image's ``mode='nearest'``)
contrast        ``(x - m) * c + m``, ``m`` the image's      c = 0.75, 0.5, 0.4, 0.3, 0.15
                per-channel mean
==============  ==========================================  ===============================

Unlike CIFAR-10-C these are generated from the run's test images, so every dataset has
them. The noise is drawn from a generator passed in (the data loader derives it from the
run seed), so a condition's corrupted test set is fixed per seed; one draw serves every
severity, so a higher severity moves each pixel at least as far (monotone by construction).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from projects.mutual.conditions import CORRUPTIONS, SEVERITIES
from projects.mutual.registry import unknown

CORRUPTION_PARAMS: dict[str, tuple[float, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
}
assert tuple(CORRUPTION_PARAMS) == CORRUPTIONS


def corrupt(x: torch.Tensor, kind: str, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A corrupted copy of images ``x`` (N, C, H, W) in [0, 1]."""
    if kind not in CORRUPTION_PARAMS:
        raise unknown("corruption", kind, CORRUPTIONS)
    if severity not in SEVERITIES:
        raise ValueError(f"corruption severity must be one of 1-5, got {severity!r}")
    c = CORRUPTION_PARAMS[kind][severity - 1]
    if kind == "gaussian_noise":
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
        out = x + c * noise
    elif kind == "gaussian_blur":
        out = gaussian_blur(x, c)
    else:
        mean = x.mean(dim=(-2, -1), keepdim=True)
        out = (x - mean) * c + mean
    return out.clamp(0.0, 1.0)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian filter of std ``sigma`` pixels, truncated at 4 sigma, replicate edges."""
    radius = max(1, math.ceil(4.0 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (t / sigma) ** 2)
    kernel = kernel / kernel.sum()
    n, ch, h, w = x.shape
    flat = x.reshape(n * ch, 1, h, w)
    flat = F.conv2d(F.pad(flat, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1))
    flat = F.conv2d(F.pad(flat, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1))
    return flat.reshape(n, ch, h, w)
