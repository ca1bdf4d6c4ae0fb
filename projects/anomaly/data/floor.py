"""The trivial floor a detector must beat: a per-pixel Gaussian of the normal training images.

A defect set that this finds (the easy set: 0.85-1.00 image AUROC) measures per-pixel
salience, not detection; the subtle set keeps per-pixel statistics, so this floor is at
chance there in expectation. The benchmark prints it beside every model, and a test bounds it
on a small subtle set. Reads any MVTec-AD-style category folder.
"""
from __future__ import annotations

from math import sqrt
from pathlib import Path

import numpy as np


def _load(path: Path, size: int, mask: bool = False) -> np.ndarray:
    from PIL import Image

    img = Image.open(path).convert("L" if mask else "RGB").resize((size, size))
    return np.asarray(img, dtype=np.float32) / 255.0


def gaussian_floor(category: str | Path, image_size: int,
                   train_category: str | Path | None = None) -> tuple[float, float]:
    """Image and pixel AUROC of the per-pixel Gaussian on one category (fitted on
    ``train_category``'s normal images when given: the cross-domain condition).

    Pixel score: the largest |z| over the colour channels, blurred (sigma 2 px); image score:
    the map's maximum. Deterministic.
    """
    from scipy.ndimage import gaussian_filter
    from sklearn.metrics import roc_auc_score

    root = Path(category)
    fit = Path(train_category) if train_category is not None else root
    train = np.stack([_load(p, image_size) for p in sorted((fit / "train" / "good").glob("*.png"))])
    mu, sd = train.mean(0), train.std(0) + 0.02
    labels, scores, pix_true, pix_score = [], [], [], []
    for folder in sorted((root / "test").iterdir()):
        for p in sorted(folder.glob("*.png")):
            z = gaussian_filter(np.abs((_load(p, image_size) - mu) / sd).max(-1), 2)
            labels.append(int(folder.name != "good"))
            scores.append(float(z.max()))
            mpath = root / "ground_truth" / folder.name / f"{p.stem}_mask.png"
            m = _load(mpath, image_size, True) > 0.5 if mpath.exists() else np.zeros_like(z, bool)
            pix_true.append(m.ravel())
            pix_score.append(z.ravel())
    return (float(roc_auc_score(labels, scores)),
            float(roc_auc_score(np.concatenate(pix_true), np.concatenate(pix_score))))


def chance_bound(n_normal: int, n_defective: int, k: float = 3.0, sets: int = 1) -> float:
    """0.5 + k standard deviations of the AUROC of uninformative scores (Mann-Whitney U under
    the null: sd = sqrt((n + m + 1) / (12 n m))), for one set or for the mean over ``sets``
    independent ones (sd / sqrt(sets)): scores that carry no information about the labels
    stay below this except with probability ~0.1 % (k = 3)."""
    return 0.5 + k * sqrt((n_normal + n_defective + 1) / (12 * n_normal * n_defective) / sets)
