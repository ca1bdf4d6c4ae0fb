"""Generated multi-class shapes: ellipses, rectangles and triangles on procedurally textured
backgrounds, with masks that are exact by construction.

A scene is drawn in the unit square (geometry and appearance from separate streams keyed by
``(seed, split, index)``), then rasterised at any size: a pixel belongs to a shape when its
centre is inside it (ellipses by their quadratic form, rectangles and triangles by half-planes),
the mask takes the class of the topmost shape there, and the image is painted with that
shape's flat colour at exactly those pixels. So

* the mask agrees with the painted shapes pixel for pixel;
* the same scene renders at 64 and at 96 pixels (``resolution_shift``), with the same geometry;
* a domain (:data:`DOMAINS`) only changes appearance: the ``shifted`` domain's texture
  families and hue range are disjoint from the training domain's, and the scene's geometry
  (hence its mask) is the same in either domain (``test`` and ``test_clean`` are paired);
* scene ``i`` does not depend on how many scenes are drawn.

Textures (background, low saturation): training domain, smooth ones: ``value_noise`` (4-6
cells across) and ``waves`` (sinusoidal stripes, period 0.2-0.4 of the image); shifted domain,
fine ones: ``checker`` (period 0.06-0.1) and ``fine_waves`` (period 0.05-0.08). Shape
palette (saturation 0.6-1, value 0.6-1): hue in [0, 0.45) for training, [0.5, 0.95) shifted.
"""
from __future__ import annotations

import colorsys
import zlib
from dataclasses import dataclass

import numpy as np

CLASSES = ("background", "ellipse", "rectangle", "triangle")
TEXTURES = {"train": ("value_noise", "waves"), "shifted": ("checker", "fine_waves")}
HUES = {"train": (0.0, 0.45), "shifted": (0.5, 0.95)}
DOMAINS = tuple(TEXTURES)


@dataclass(frozen=True)
class Shape:
    kind: int
    """Class index (1 ellipse, 2 rectangle, 3 triangle)."""
    centre: tuple[float, float]
    """(x, y) in the unit square; y grows downwards like row indices."""
    params: tuple[float, ...]
    """ellipse: (semi-axis a, semi-axis b, angle); rectangle: (half-width, half-height, angle);
    triangle: the three vertex angles and radii around the centre (a0, a1, a2, r0, r1, r2)."""
    hue_u: float
    """Uniform draws of the colour: the hue is placed in the domain's range."""
    sat: float
    val: float


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]
    texture_u: tuple[float, ...]
    """Uniform draws of the background: family pick, frequency, orientation, phase, colours."""
    noise_seed: int
    """Seed of the value-noise grid (resolution-independent)."""


def _rng(seed: int, split: str, stream: str, index: int) -> np.random.Generator:
    code = zlib.crc32(f"shapes/{split}/{stream}".encode())
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, code, int(index)]))


def draw_scene(seed: int, split: str, index: int, min_shapes: int = 1, max_shapes: int = 4) -> Scene:
    """Scene ``index`` of ``split`` (independent of every other scene)."""
    g = _rng(seed, split, "geometry", index)
    a = _rng(seed, split, "appearance", index)
    shapes = []
    for _ in range(int(g.integers(min_shapes, max_shapes + 1))):
        kind = int(g.integers(1, 4))
        centre = (float(g.uniform(0.2, 0.8)), float(g.uniform(0.2, 0.8)))
        size = float(g.uniform(0.1, 0.25))
        angle = float(g.uniform(0, np.pi))
        if kind == 3:
            base = float(g.uniform(0, 2 * np.pi))
            gaps = g.uniform(0.6, 1.4, size=3)
            angles = base + np.cumsum(gaps / gaps.sum() * 2 * np.pi)
            radii = size * g.uniform(0.9, 1.4, size=3)
            params = tuple(float(v) for v in (*angles, *radii))
        else:
            params = (size, size * float(g.uniform(0.45, 1.0)), angle)
        shapes.append(Shape(kind, centre, params, float(a.uniform()), float(a.uniform(0.6, 1.0)),
                            float(a.uniform(0.6, 1.0))))
    return Scene(tuple(shapes), tuple(float(v) for v in a.uniform(size=8)), int(a.integers(2 ** 31)))


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (np.arange(size) + 0.5) / size
    return np.meshgrid(c, c, indexing="xy")  # x varies along columns, y along rows


def shape_mask(shape: Shape, size: int) -> np.ndarray:
    """Pixels (size x size) whose centre is inside ``shape``."""
    x, y = _grid(size)
    dx, dy = x - shape.centre[0], y - shape.centre[1]
    if shape.kind == 1:
        a, b, t = shape.params
        u, v = dx * np.cos(t) + dy * np.sin(t), -dx * np.sin(t) + dy * np.cos(t)
        return (u / a) ** 2 + (v / b) ** 2 <= 1.0
    return inside_convex(polygon(shape), x, y)


def polygon(shape: Shape) -> np.ndarray:
    """Vertices (k, 2) of a rectangle or triangle, counter-clockwise in (x, y)."""
    cx, cy = shape.centre
    if shape.kind == 2:
        hw, hh, t = shape.params
        corners = np.array([[-hw, -hh], [hw, -hh], [hw, hh], [-hw, hh]])
        rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
        return corners @ rot.T + [cx, cy]
    angles, radii = np.array(shape.params[:3]), np.array(shape.params[3:])
    return np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)


def inside_convex(vertices: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points on the inner side of every edge of a convex polygon (either orientation)."""
    signs = []
    for (x0, y0), (x1, y1) in zip(vertices, np.roll(vertices, -1, axis=0)):
        signs.append((x1 - x0) * (y - y0) - (y1 - y0) * (x - x0))
    s = np.stack(signs)
    return (s >= 0).all(0) | (s <= 0).all(0)


def shape_colour(shape: Shape, domain: str) -> np.ndarray:
    lo, hi = HUES[domain]
    return np.array(colorsys.hsv_to_rgb(lo + (hi - lo) * shape.hue_u, shape.sat, shape.val))


def texture(scene: Scene, size: int, domain: str) -> tuple[np.ndarray, str]:
    """The background (3, size, size) in [0, 1] and its family name."""
    u = scene.texture_u
    family = TEXTURES[domain][int(u[0] * 2) % 2]
    x, y = _grid(size)
    theta = u[2] * np.pi
    along = x * np.cos(theta) + y * np.sin(theta)
    if family == "value_noise":
        t = _value_noise(scene.noise_seed, 4 + int(u[1] * 3), size)
    elif family == "waves":
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (along / (0.2 + 0.2 * u[1]) + u[3]))
    elif family == "checker":
        p = 0.06 + 0.04 * u[1]
        across = -x * np.sin(theta) + y * np.cos(theta)
        t = ((np.floor(along / p + u[3]) + np.floor(across / p)) % 2).astype(float)
    else:  # fine_waves
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (along / (0.05 + 0.03 * u[1]) + u[3]))
    lo, contrast = 0.15 + 0.3 * u[4], 0.3 + 0.3 * u[5]
    tint = np.array(colorsys.hsv_to_rgb(u[6], 0.2 * u[7], 1.0))
    bg = (lo + contrast * t)[None] * tint[:, None, None]
    return np.clip(bg, 0.0, 1.0), family


def _value_noise(seed: int, cells: int, size: int) -> np.ndarray:
    """Bilinear interpolation of a (cells+1)^2 grid of uniform values: the same field at any size."""
    grid = np.random.default_rng(seed).uniform(size=(cells + 1, cells + 1))
    x, y = _grid(size)
    gx, gy = x * cells, y * cells
    i, j = np.minimum(gy.astype(int), cells - 1), np.minimum(gx.astype(int), cells - 1)
    fy, fx = gy - i, gx - j
    top = grid[i, j] * (1 - fx) + grid[i, j + 1] * fx
    bottom = grid[i + 1, j] * (1 - fx) + grid[i + 1, j + 1] * fx
    return top * (1 - fy) + bottom * fy


def render(scene: Scene, size: int, domain: str = "train", *, texture_domain: str | None = None,
           palette_domain: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image (3, s, s) float32 in [0, 1], mask (s, s) int64, background (3, s, s))``.

    ``domain`` sets both texture and palette; ``texture_domain`` / ``palette_domain`` one each.
    """
    bg, _ = texture(scene, size, texture_domain or domain)
    image, mask = bg.copy(), np.zeros((size, size), dtype=np.int64)
    for shape in scene.shapes:
        inside = shape_mask(shape, size)
        mask[inside] = shape.kind
        image[:, inside] = shape_colour(shape, palette_domain or domain)[:, None]
    return image.astype(np.float32), mask, bg.astype(np.float32)


def generate(seed: int, split: str, n: int, size: int, *, min_shapes: int = 1, max_shapes: int = 4,
             texture_domain: str = "train", palette_domain: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """``n`` scenes of ``split`` at ``size``: images (n, 3, s, s) float32, masks (n, s, s) int64."""
    x = np.empty((n, 3, size, size), dtype=np.float32)
    y = np.empty((n, size, size), dtype=np.int64)
    for i in range(n):
        scene = draw_scene(seed, split, i, min_shapes, max_shapes)
        x[i], y[i], _ = render(scene, size, texture_domain=texture_domain, palette_domain=palette_domain)
    return x, y
