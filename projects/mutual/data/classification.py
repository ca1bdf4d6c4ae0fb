"""Classification splits for one run: read, split (fixed by ``split_seed``), apply the condition.

* test: the source's official test split, or ``test_fraction`` of the images when it has
  none (digits, mnist5k, an ImageFolder without ``test/``);
* val: ``val_fraction`` of the remaining training images (never of test);
* both fixed by ``split_seed`` alone, so every run seed and condition sees the same images;
* label noise (``label_noise`` > 0): on the training split only, drawn from the run
  ``seed`` (fixed per seed); val and test labels stay clean;
* corruption (``corruption`` != none): ``test`` is the corrupted test split and
  ``extra["test_clean"]`` the clean one; the corruption noise is drawn from the run seed.
"""
from __future__ import annotations

import numpy as np
import torch

from projects.mutual.conditions import CORRUPTIONS
from projects.mutual.data import DataError
from projects.mutual.data.base import DataSplits, Split, derived_generator, derived_rng
from projects.mutual.data.corruptions import corrupt
from projects.mutual.data.noise import symmetric_label_noise
from projects.mutual.data.sources import load_raw


def load_classification(dataset: str = "digits", *, path: str | None = None, val_fraction: float = 0.1,
                        test_fraction: float = 0.2, max_train: int | None = None,
                        max_test: int | None = None, split_seed: int = 0, image_size: int = 32,
                        channels: int = 3, label_noise: float = 0.0, corruption: str = "none",
                        severity: int = 0, seed: int = 0) -> DataSplits:
    if not 0.0 < val_fraction < 1.0 or not 0.0 < test_fraction < 1.0:
        raise DataError(f"data.val_fraction and data.test_fraction must be in (0, 1), got "
                        f"{val_fraction} and {test_fraction}")
    if corruption != "none" and corruption not in CORRUPTIONS:
        raise DataError(f"unknown corruption {corruption!r}; valid: none, {', '.join(CORRUPTIONS)}")
    raw = load_raw(dataset, path, image_size=image_size, channels=channels)
    rng = derived_rng(split_seed, "split")
    x, y = raw.x_train, raw.y_train
    if raw.x_test is None:
        order = rng.permutation(len(y))
        n_test = int(round(test_fraction * len(y)))
        test_idx, pool = np.sort(order[:n_test]), np.sort(order[n_test:])
        x_test, y_test = x[test_idx], y[test_idx]
        x, y = x[pool], y[pool]
    else:
        x_test, y_test = raw.x_test, raw.y_test
    order = rng.permutation(len(y))
    n_val = int(round(val_fraction * len(y)))
    val_idx, train_idx = np.sort(order[:n_val]), order[n_val:]
    if max_train is not None:
        train_idx = train_idx[:max_train]
    train_idx = np.sort(train_idx)
    if max_test is not None and max_test < len(y_test):
        keep = np.sort(rng.permutation(len(y_test))[:max_test])
        x_test, y_test = x_test[keep], y_test[keep]
    if n_val == 0 or len(train_idx) == 0 or len(y_test) == 0:
        raise DataError(f"{dataset}: {len(train_idx)} train / {n_val} val / {len(y_test)} test images "
                        f"after splitting; every split needs at least one (check data.val_fraction, "
                        f"data.test_fraction, data.max_train)")

    k = raw.num_classes
    y_train = y[train_idx]
    noisy = clean = None
    if label_noise > 0:
        clean = y_train
        y_train, flipped = symmetric_label_noise(y_train, label_noise, k, derived_rng(seed, "label_noise"))
        noisy = torch.from_numpy(flipped)
        clean = torch.from_numpy(clean)
    t = torch.from_numpy
    train = Split("train", t(np.ascontiguousarray(x[train_idx])), t(y_train), noisy, clean)
    val = Split("val", t(np.ascontiguousarray(x[val_idx])), t(y[val_idx]))
    test = Split("test", t(np.ascontiguousarray(x_test)), t(np.asarray(y_test)))
    extra: dict[str, Split] = {}
    if corruption != "none":
        gen = derived_generator(seed, f"corruption:{corruption}")
        extra["test_clean"] = Split("test_clean", test.x, test.y)
        test = Split("test", corrupt(test.x, corruption, int(severity), gen), test.y)
    info = {"label_noise": float(label_noise),
            "flipped": int(noisy.sum()) if noisy is not None else 0,
            "corruption": corruption, "severity": int(severity) if corruption != "none" else 0}
    return DataSplits(dataset, train, val, test, k, tuple(int(s) for s in x.shape[1:]), extra, info)
