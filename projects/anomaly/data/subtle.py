"""Subtle defects: the surface's structure is wrong, its per-pixel statistics are not.

The easy defects (:mod:`textures`) paint pixels a colour no normal image has there, so a
per-pixel Gaussian of the normal images finds them (0.85-1.00 image AUROC): that set cannot
tell a good detector from a trivial one. Every defect here moves or filters the *material*
layer of a normal image (:class:`~projects.anomaly.data.textures.Layers`) and leaves its light
and sensor noise alone, so what lands on each pixel is drawn from the same distribution as in
a normal image:

- ``shifted``: a rectangle of the texture displaced (a patch out of phase, a misplaced tile);
- ``rotated``: a disc of the texture turned about its centre (an orientation flaw);
- ``thread``: a thin band displaced along a line (a pulled thread, a weave break);
- ``focus``: a region blurred or sharpened, its contrast restored to the image's own;
- ``chroma``: one colour channel displaced (a colour shift; each channel's values unchanged).

Moves sample with nearest neighbours (values are permuted, never mixed) and the textures are
stationary, so each pixel's marginal is kept: a per-pixel model is at chance in expectation
(``focus`` keeps mean and variance, not the exact marginal). Each kind takes a ``severity``
1-3 (larger region, larger move or filter). A kind applies to a domain only where it changes
the texture visibly (:data:`APPLIES`): turning isotropic grain, or blurring a pure sinusoid
whose contrast is then restored, changes nothing.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from projects.anomaly.data.textures import Layers, normal_layers

SUBTLE_DEFECTS = ("shifted", "rotated", "thread", "blur", "sharpen", "chroma")
SEVERITIES = (1, 2, 3)
APPLIES: dict[str, tuple[str, ...]] = {
    "A": ("shifted", "rotated", "thread", "chroma"),  # a sinusoid blurred or sharpened, renormalised, is itself
    "B": ("shifted", "rotated", "thread"),            # smooth fabric: blur and 1-3 px moves barely change it
    "C": ("shifted", "rotated", "thread", "blur", "sharpen", "chroma"),
    "D": ("sharpen", "chroma"),                       # blurred grain: the floor's own blur sees it                         # isotropic, uncorrelated grain: moves are invisible
}
MIN_CHANGE = 0.02
"""Mean absolute change of the material inside the mask a drawn defect must reach (else it is
drawn again): about 5 grey levels, so no defect is an unmarked no-op."""
MIN_CHANGED_FRACTION = 0.5
"""Share of the mask's pixels that must change by a grey level or more (else it is drawn again):
a region mostly left as it was (a disc turned inside one flat tile) is not a marked defect."""


def _centre(rng: np.random.Generator, size: int) -> tuple[float, float]:
    return tuple(rng.uniform(0.3, 0.7, 2) * size)


def _coords(size: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[0:size, 0:size].astype(float)


def _resample(layers: Layers, mask: np.ndarray, sy: np.ndarray, sx: np.ndarray,
              channel: int | None = None) -> None:
    """Inside ``mask``, the material at (sy, sx), nearest neighbour: values are moved, not
    mixed (one ``channel`` only, or all)."""
    size = mask.shape[0]
    iy = np.clip(np.rint(sy), 0, size - 1).astype(int)
    ix = np.clip(np.rint(sx), 0, size - 1).astype(int)
    moved = layers.material[iy, ix]  # fancy indexing copies
    if channel is None:
        layers.material[mask] = moved[mask]
    else:
        layers.material[mask, channel] = moved[mask, channel]


def _displacement(rng: np.random.Generator, size: int, lo: float, hi: float) -> tuple[float, float]:
    angle = rng.uniform(0, 2 * np.pi)
    r = rng.uniform(lo, hi) * size
    return r * np.sin(angle), r * np.cos(angle)


def _shifted(layers: Layers, rng: np.random.Generator, size: int, severity: int) -> np.ndarray:
    """A rectangle of the texture displaced by 3-12 % of the image side."""
    cy, cx = _centre(rng, size)
    h, w = rng.uniform(0.08, 0.12, 2) * size * (0.6 + 0.2 * severity)
    y, x = _coords(size)
    mask = (np.abs(y - cy) < h / 2) & (np.abs(x - cx) < w / 2)
    dy, dx = _displacement(rng, size, 0.01 + 0.025 * severity, 0.02 + 0.035 * severity)
    _resample(layers, mask, y + dy, x + dx)
    return mask


def _rotated(layers: Layers, rng: np.random.Generator, size: int, severity: int) -> np.ndarray:
    """A disc of the texture turned by 30/60/90 degrees about its centre."""
    cy, cx = _centre(rng, size)
    r = rng.uniform(0.06, 0.09) * size * (0.6 + 0.2 * severity)
    theta = np.deg2rad((30, 60, 90)[severity - 1]) * rng.choice([-1, 1])
    y, x = _coords(size)
    mask = (y - cy) ** 2 + (x - cx) ** 2 < r ** 2
    c, s = np.cos(theta), np.sin(theta)
    _resample(layers, mask, cy + c * (y - cy) - s * (x - cx), cx + s * (y - cy) + c * (x - cx))
    return mask


def _thread(layers: Layers, rng: np.random.Generator, size: int, severity: int) -> np.ndarray:
    """A band 1-2.5 px wide (at 64 px) and 30-50 % of the side long, its texture displaced."""
    cy, cx = _centre(rng, size)
    angle = rng.uniform(0, np.pi)
    length = rng.uniform(0.3, 0.5) * size
    width = (1.0, 1.5, 2.5)[severity - 1] * size / 64
    y, x = _coords(size)
    along = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
    across = np.abs(-(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle))
    mask = (np.abs(along) < length / 2) & (across < width / 2)
    dy, dx = _displacement(rng, size, 0.02 + 0.01 * severity, 0.04 + 0.01 * severity)
    _resample(layers, mask, y + dy, x + dx)
    return mask


def _refocus(layers: Layers, rng: np.random.Generator, size: int, severity: int,
             sharpen: bool) -> np.ndarray:
    """A disc blurred or sharpened, then each channel rescaled to the image's own mean and
    standard deviation: coarser or finer texture at the same contrast."""
    from scipy.ndimage import gaussian_filter

    cy, cx = _centre(rng, size)
    r = rng.uniform(0.08, 0.12) * size * (0.6 + 0.2 * severity)
    y, x = _coords(size)
    mask = (y - cy) ** 2 + (x - cx) ** 2 < r ** 2
    sigma = (0.8, 1.2, 2.0)[severity - 1] * size / 64
    m = layers.material
    for c in range(m.shape[-1]):
        smooth = gaussian_filter(m[..., c], sigma)
        f = m[..., c] + (0.5 + 0.5 * severity) * (m[..., c] - smooth) if sharpen else smooth
        f = m[..., c].mean() + (f - f.mean()) * m[..., c].std() / (f.std() + 1e-9)
        m[mask, c] = f[mask]
    return mask


def _blur(layers: Layers, rng: np.random.Generator, size: int, severity: int) -> np.ndarray:
    return _refocus(layers, rng, size, severity, sharpen=False)


def _sharpen(layers: Layers, rng: np.random.Generator, size: int, severity: int) -> np.ndarray:
    return _refocus(layers, rng, size, severity, sharpen=True)


def _chroma(layers: Layers, rng: np.random.Generator, size: int, severity: int) -> np.ndarray:
    """A rectangle where one colour channel is displaced by 1-3 px (at 64 px): colour fringes
    and a colour cast; every channel keeps its own values, only their pairing changes."""
    cy, cx = _centre(rng, size)
    h, w = rng.uniform(0.1, 0.16, 2) * size * (0.6 + 0.2 * severity)
    y, x = _coords(size)
    mask = (np.abs(y - cy) < h / 2) & (np.abs(x - cx) < w / 2)
    dy, dx = _displacement(rng, size, severity / 64, (severity + 0.5) / 64)
    _resample(layers, mask, y + dy, x + dx, channel=int(rng.integers(3)))
    return mask


MAKERS: dict[str, Callable[[Layers, np.random.Generator, int, int], np.ndarray]] = {
    "shifted": _shifted, "rotated": _rotated, "thread": _thread, "blur": _blur, "sharpen": _sharpen, "chroma": _chroma}


def subtle_defects(domain: str) -> tuple[str, ...]:
    """The subtle defect kinds written for ``domain``."""
    return APPLIES[domain]


def subtle_image(domain: str, defect: str, rng: np.random.Generator, size: int,
                 severity: int, tries: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """A normal image of ``domain`` with one subtle defect, and its exact mask.

    The defect is redrawn (same image) until it changes the material by :data:`MIN_CHANGE` on
    average inside its mask and changes :data:`MIN_CHANGED_FRACTION` of the mask's pixels, so
    a displacement that happens to be a whole period never yields an unmarked no-op; after
    ``tries`` draws the most visible one is kept.
    """
    if defect not in APPLIES[domain]:
        raise ValueError(f"defect {defect!r} does not apply to domain {domain!r} (it would leave the "
                         f"texture unchanged); domain {domain} has {', '.join(APPLIES[domain])}")
    clean = normal_layers(domain, rng, size)
    best: tuple[float, Layers, np.ndarray] | None = None
    for _ in range(tries):
        layers = Layers(clean.material.copy(), clean.light, clean.noise)
        mask = MAKERS[defect](layers, rng, size, severity)
        change = np.abs(layers.material - clean.material).max(-1)[mask]
        if change.mean() >= MIN_CHANGE and (change >= 1 / 255).mean() >= MIN_CHANGED_FRACTION:
            return layers.compose(), mask
        if best is None or change.mean() > best[0]:
            best = (float(change.mean()), layers, mask)
    return best[1].compose(), best[2]
