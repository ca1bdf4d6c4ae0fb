"""The MVTec AD folder layout: writing the generated set, and reading any such folder.

Layout (one folder per category, here one per domain)::

    ROOT/<category>/train/good/000.png
    ROOT/<category>/test/good/000.png
    ROOT/<category>/test/<defect>/000.png
    ROOT/<category>/ground_truth/<defect>/000_mask.png

A user's own MVTec-AD-style folder works the same way as the generated one: the task only
ever reads the layout, so ``data.root`` pointing at real data changes nothing else.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from projects.anomaly.data.subtle import SEVERITIES, subtle_defects, subtle_image
from projects.anomaly.data.textures import DEFECTS, DOMAIN_DESCRIPTIONS, defective_image, normal_image

MARKER = "labrun_textures.json"
SEVERITY_FILE = "labrun_severity.json"
"""Per category, ``{"<defect>/<stem>": severity}`` for the subtle set (beside train/ and test/,
so MVTec readers never see it)."""
DEFECT_SETS = ("easy", "subtle")


@dataclass(frozen=True)
class GenerateSpec:
    """What the generated set holds; its hash names the cache folder, so changing any of
    these regenerates instead of silently reusing stale images."""

    domains: tuple[str, ...] = ("A", "B", "C", "D")
    size: int = 128
    n_train: int = 40
    n_test_good: int = 16
    n_per_defect: int = 6
    seed: int = 0
    defect_set: str = "easy"
    """``easy``: painted defects (scratch, spot, missing, blob); ``subtle``: structure defects
    that keep per-pixel statistics (:mod:`projects.anomaly.data.subtle`), at severities 1-3."""

    def defects(self, domain: str) -> dict[str, int]:
        """Defect kind -> test images of it. The subtle kinds differ per domain, so the same
        total (``n_per_defect`` x 4, as in the easy set) is shared among the domain's kinds."""
        kinds = DEFECTS if self.defect_set == "easy" else subtle_defects(domain)
        total = self.n_per_defect * len(DEFECTS)
        if self.defect_set == "easy":
            return {k: self.n_per_defect for k in kinds}
        return {k: total // len(kinds) + (i < total % len(kinds)) for i, k in enumerate(kinds)}

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.__dict__, sort_keys=True, default=list).encode()).hexdigest()[:12]


def _save_png(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    if array.dtype == bool:
        Image.fromarray(array.astype(np.uint8) * 255, mode="L").save(path)
    else:
        Image.fromarray((np.clip(array, 0, 1) * 255).round().astype(np.uint8), mode="RGB").save(path)


def write_domain(root: Path, domain: str, spec: GenerateSpec) -> Path:
    """One domain as an MVTec category; each split has its own seeded generator so that
    adding test images never changes the training images."""
    cat = root / f"domain_{domain}"
    base = spec.seed * 1000 + ord(domain)
    rng = np.random.default_rng([base, 0])
    for i in range(spec.n_train):
        _save_png(cat / "train" / "good" / f"{i:03d}.png", normal_image(domain, rng, spec.size))
    rng = np.random.default_rng([base, 1])
    for i in range(spec.n_test_good):
        _save_png(cat / "test" / "good" / f"{i:03d}.png", normal_image(domain, rng, spec.size))
    severities = {}
    for k, (defect, count) in enumerate(spec.defects(domain).items()):
        rng = np.random.default_rng([base, 2 + k])
        for i in range(count):
            img, mask, severity = _defective(domain, defect, rng, spec, i)
            _save_png(cat / "test" / defect / f"{i:03d}.png", img)
            _save_png(cat / "ground_truth" / defect / f"{i:03d}_mask.png", mask)
            if severity is not None:
                severities[f"{defect}/{i:03d}"] = severity
    if severities:
        (cat / SEVERITY_FILE).write_text(json.dumps(severities, indent=1))
    return cat


def _defective(domain: str, defect: str, rng: np.random.Generator, spec: GenerateSpec,
               i: int) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Image, mask and severity (None for the easy set) of the i-th test image of a defect:
    subtle severities cycle 1, 2, 3 so every count of images holds each level evenly."""
    if spec.defect_set == "easy":
        return (*defective_image(domain, defect, rng, spec.size), None)
    severity = SEVERITIES[i % len(SEVERITIES)]
    return (*subtle_image(domain, defect, rng, spec.size, severity), severity)


SOURCES = "anomaly_sources"


def write_anomaly_sources(out: Path, spec: GenerateSpec, n: int = 24) -> Path:
    """Stand-ins for the DTD textures DRAEM pastes into its synthetic anomalies: recoloured
    textures of every family (anomalib would download DTD otherwise)."""
    from projects.anomaly.data.textures import TEXTURES, perlin

    rng = np.random.default_rng([spec.seed, 99])
    folder = out / SOURCES
    families = list(TEXTURES)
    for i in range(n):
        tex = TEXTURES[families[i % len(families)]](rng, spec.size).raw()
        tint = perlin(rng, spec.size, octaves=2, base=32)[..., None] * rng.uniform(0, 1, 3)
        _save_png(folder / f"{i:03d}.png", np.clip(0.6 * tex[..., rng.permutation(3)] + 0.6 * tint, 0, 1))
    return folder


def generate(root: str | Path, spec: GenerateSpec = GenerateSpec()) -> Path:
    """Write the set under ``root/<digest>/`` unless it is already there; returns that folder.

    The marker file is written last, so a generation cut short is redone, never half-used.
    """
    if spec.defect_set not in DEFECT_SETS:
        raise ValueError(f"unknown defect set {spec.defect_set!r}; one of {', '.join(DEFECT_SETS)}")
    out = Path(root) / f"textures-{spec.defect_set}-{spec.digest()}"
    if (out / MARKER).exists():
        return out
    for domain in spec.domains:
        write_domain(out, domain, spec)
    write_anomaly_sources(out, spec)
    info = {**spec.__dict__, "domains": list(spec.domains),
            "defects": {d: spec.defects(d) for d in spec.domains},
            "descriptions": {d: DOMAIN_DESCRIPTIONS[d] for d in spec.domains}}
    (out / MARKER).write_text(json.dumps(info, indent=2))
    return out


@dataclass(frozen=True)
class Category:
    """One MVTec-style category folder, checked before any run starts."""

    root: Path
    name: str
    defects: tuple[str, ...]

    @property
    def path(self) -> Path:
        return self.root / self.name

    def folder_kwargs(self) -> dict:
        """Arguments of anomalib's ``Folder`` datamodule for this category."""
        masks = [f"ground_truth/{d}" for d in self.defects]
        return {
            "root": self.path.resolve(),
            "normal_dir": "train/good",
            "normal_test_dir": "test/good",
            "abnormal_dir": [f"test/{d}" for d in self.defects],
            "mask_dir": masks if all((self.path / m).is_dir() for m in masks) else None,
        }


def category_names(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir()) if root.is_dir() else []


def open_category(root: str | Path, name: str) -> Category:
    """The category ``name`` under ``root``; ValueError saying what is there when it is not."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"data root {str(root)!r} is not a folder; give an MVTec-AD-style folder "
                         f"(ROOT/<category>/train/good, test/<defect>, ground_truth/<defect>)")
    names = category_names(root)
    if name not in names:
        raise ValueError(f"no category {name!r} under {str(root)!r}; found: {', '.join(names) or 'none'}")
    test = root / name / "test"
    defects = tuple(sorted(p.name for p in test.iterdir() if p.is_dir() and p.name != "good")) \
        if test.is_dir() else ()
    if not defects or not (test / "good").is_dir():
        raise ValueError(f"category {name!r} under {str(root)!r} needs test/good and at least one "
                         f"test/<defect> folder")
    return Category(root, name, defects)
