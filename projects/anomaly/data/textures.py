"""Procedural textures and defects with exact pixel masks.

Real inspection data cannot ship with the repo and nothing may be downloaded, so tests, the
demo and the benchmark use textures drawn here. Each domain is a different texture family
under different lighting, so a cross-domain condition is a real distribution shift; each
defect kind changes a known set of pixels, so pixel AUROC has an exact ground truth.
Everything is numpy, seeded, and takes milliseconds per image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

DOMAINS = ("A", "B", "C", "D")
DEFECTS = ("scratch", "spot", "missing", "blob")
DOMAIN_DESCRIPTIONS = {
    "A": "oriented stripes (woven grating), even light",
    "B": "smooth cloudy fabric, light falling off left to right",
    "C": "tiled grid with mortar lines, dim light",
    "D": "fine grain (sandpaper), vignetted light",
}


def smooth_noise(rng: np.random.Generator, size: int, scale: int) -> np.ndarray:
    """Value noise in [0, 1]: random values on a coarse grid, bicubically upsampled.

    Sums of these at several scales are the Perlin-style fields the blobs and fabric use.
    """
    from scipy.ndimage import zoom

    cells = max(2, size // scale + 3)
    coarse = rng.random((cells, cells))
    fine = zoom(coarse, size / (cells - 3), order=3)
    off = int(round(size / (cells - 3)))
    out = fine[off:off + size, off:off + size]
    lo, hi = out.min(), out.max()
    return (out - lo) / (hi - lo + 1e-9)


def perlin(rng: np.random.Generator, size: int, octaves: int = 3, base: int = 32) -> np.ndarray:
    """Fractal (multi-octave) value noise in [0, 1]."""
    total = np.zeros((size, size))
    amp = 1.0
    for o in range(octaves):
        total += amp * smooth_noise(rng, size, max(2, base >> o))
        amp *= 0.5
    return (total - total.min()) / (total.max() - total.min() + 1e-9)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(float) / size
    return y, x


@dataclass
class Layers:
    """A normal image before it is composed: the material's colour (what a defect of the
    surface changes), the light falling on it and the sensor noise (neither of which a surface
    defect moves). Subtle defects edit ``material`` only, so the light and the noise at every
    pixel stay those of a normal image."""

    material: np.ndarray
    """(size, size, 3) reflectance."""
    light: np.ndarray
    """(size, size) illumination factor."""
    noise: np.ndarray
    """(size, size, 3) additive sensor noise."""

    def raw(self) -> np.ndarray:
        """The composed image before clipping to [0, 1]."""
        return self.material * self.light[..., None] + self.noise

    def compose(self) -> np.ndarray:
        return np.clip(self.raw(), 0, 1)


def _stripes(rng, size):
    y, x = _grid(size)
    angle = rng.uniform(0.6, 0.9)
    freq = rng.uniform(9, 11)
    phase = rng.uniform(0, 2 * np.pi)
    s = 0.5 + 0.35 * np.sin(2 * np.pi * freq * (x * np.cos(angle) + y * np.sin(angle)) + phase)
    rgb = np.stack([s * 0.9, s * 0.75, s * 0.55], -1)
    return Layers(rgb, np.ones((size, size)), rng.normal(0, 0.03, rgb.shape))


def _fabric(rng, size):
    n = perlin(rng, size, octaves=4, base=24)
    _, x = _grid(size)
    rgb = np.stack([0.3 + 0.5 * n, 0.45 + 0.3 * n, 0.6 + 0.25 * n], -1)
    return Layers(rgb, 1.0 - 0.35 * x, rng.normal(0, 0.02, rgb.shape))


def _tiles(rng, size):
    y, x = _grid(size)
    period = 1 / 6
    ox, oy = rng.uniform(0, period, 2)
    gx = np.abs(((x + ox) % period) / period - 0.5)
    gy = np.abs(((y + oy) % period) / period - 0.5)
    mortar = ((gx > 0.44) | (gy > 0.44)).astype(float)
    tile = 0.55 + 0.08 * perlin(rng, size, octaves=2, base=16)
    v = tile * (1 - mortar) + 0.2 * mortar
    rgb = np.stack([v * 0.8, v * 0.8, v * 0.85], -1)
    return Layers(rgb, np.full((size, size), 0.75), rng.normal(0, 0.02, rgb.shape))


def _grain(rng, size):
    from scipy.ndimage import gaussian_filter

    g = gaussian_filter(rng.random((size, size)), 0.8)
    g = (g - g.mean()) / (g.std() + 1e-9)
    y, x = _grid(size)
    vignette = 1.0 - 0.6 * ((x - 0.5) ** 2 + (y - 0.5) ** 2)
    v = 0.55 + 0.08 * g
    rgb = np.stack([v * 1.0, v * 0.9, v * 0.7], -1)
    return Layers(rgb, vignette, np.zeros_like(rgb))


TEXTURES: dict[str, Callable[[np.random.Generator, int], Layers]] = {
    "A": _stripes, "B": _fabric, "C": _tiles, "D": _grain}


def normal_layers(domain: str, rng: np.random.Generator, size: int) -> Layers:
    """One defect-free image of a domain, not yet composed (see :class:`Layers`)."""
    return TEXTURES[domain](rng, size)


def normal_image(domain: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """One defect-free image of a domain, float RGB in [0, 1], shape (size, size, 3)."""
    return normal_layers(domain, rng, size).compose()


# --------------------------------------------------------------------------- defects

def _scratch(img, rng, size):
    """A thin straight line, brighter or darker than the surface."""
    y, x = np.mgrid[0:size, 0:size].astype(float)
    cx, cy = rng.uniform(0.3, 0.7, 2) * size
    angle = rng.uniform(0, np.pi)
    length = rng.uniform(0.3, 0.55) * size
    width = rng.uniform(1.0, 2.0) * size / 128
    dx, dy = np.cos(angle), np.sin(angle)
    along = (x - cx) * dx + (y - cy) * dy
    across = np.abs(-(x - cx) * dy + (y - cy) * dx)
    mask = (np.abs(along) < length / 2) & (across < max(width, 0.8))
    tone = rng.choice([0.05, 0.95])
    img[mask] = 0.3 * img[mask] + 0.7 * tone
    return mask


def _spot(img, rng, size):
    """A round stain of another colour."""
    y, x = np.mgrid[0:size, 0:size].astype(float)
    cx, cy = rng.uniform(0.25, 0.75, 2) * size
    r = rng.uniform(0.05, 0.1) * size
    mask = (x - cx) ** 2 + (y - cy) ** 2 < r ** 2
    colour = rng.uniform(0, 1, 3)
    img[mask] = 0.2 * img[mask] + 0.8 * colour
    return mask


def _missing(img, rng, size):
    """A rectangular hole: the texture is gone, a flat dark backing shows through."""
    w, h = (rng.uniform(0.1, 0.2, 2) * size).astype(int) + 2
    x0 = rng.integers(int(0.15 * size), int(0.85 * size) - w)
    y0 = rng.integers(int(0.15 * size), int(0.85 * size) - h)
    mask = np.zeros((size, size), bool)
    mask[y0:y0 + h, x0:x0 + w] = True
    img[mask] = rng.uniform(0.0, 0.15) + rng.normal(0, 0.01, (mask.sum(), 3))
    return mask


def _blob(img, rng, size):
    """A Perlin-noise region (DRAEM's own recipe for anomalies) blended with other texture."""
    field = perlin(rng, size, octaves=3, base=max(8, size // 6))
    y, x = np.mgrid[0:size, 0:size].astype(float) / size
    cx, cy = rng.uniform(0.3, 0.7, 2)
    focus = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.02)
    score = field * focus
    mask = score > np.quantile(score, 1 - rng.uniform(0.03, 0.06))
    other = normal_layers(str(rng.choice(list(TEXTURES))), rng, size).raw()
    img[mask] = 0.25 * img[mask] + 0.75 * np.clip(other[mask][:, ::-1], 0, 1)
    return mask


DEFECT_MAKERS: dict[str, Callable[[np.ndarray, np.random.Generator, int], np.ndarray]] = {
    "scratch": _scratch, "spot": _spot, "missing": _missing, "blob": _blob}


def defective_image(domain: str, defect: str, rng: np.random.Generator,
                    size: int) -> tuple[np.ndarray, np.ndarray]:
    """An image with one defect and its exact mask (bool, True where the defect is)."""
    img = normal_image(domain, rng, size)
    mask = DEFECT_MAKERS[defect](img, rng, size)
    return np.clip(img, 0, 1), mask
