"""The segmentation splits of one run, with its condition applied.

* ``shapes``: train / val / test are separate generated draws fixed by ``data.split_seed``
  (every run seed and condition sees the same scenes), rendered at ``seg.image_size``;
* a read set (``voc``, ``cityscapes``, ``segfolder``; :mod:`.sources`): its train split (val
  carved from it by ``data.val_fraction``, fixed by ``data.split_seed``) and its val/test split
  as ``test``, resized to ``seg.image_size``;
* ``corrupt_<kind>_<s>``: ``test`` corrupted (the classification corruptions, noise drawn from
  the run seed), ``test_clean`` the clean test images;
* ``resolution_shift``: ``test`` at ``seg.shift_image_size`` (shapes re-rendered, read sets
  resized), ``test_clean`` at ``seg.image_size``; training is unchanged;
* ``domain_shift`` (shapes): ``test`` renders the test scenes with the shifted textures and/or
  palette (``seg.domain_shift``), ``test_clean`` the same scenes in the training domain.

Targets are int64 class maps (N, H, W), ``seg.ignore_index`` where void.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from projects.mutual.data import DataError
from projects.mutual.data.base import DataSplits, Split, derived_generator, derived_rng
from projects.mutual.data.corruptions import corrupt

SOURCE_DATASETS = ("voc", "cityscapes", "segfolder")


@dataclass
class SegmentationSplits(DataSplits):
    """:class:`DataSplits` of images (N, 3, H, W) in [0, 1] and class maps (N, H, W)."""

    class_names: tuple[str, ...] = ()
    ignore_index: int = 255

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["sizes"] = {k: list(v.x.shape[-2:]) for k, v in {"train": self.train, **self.eval_splits()}.items()}
        out["class_names"] = list(self.class_names)
        return out


def _tensor(x: np.ndarray, y: np.ndarray, name: str) -> Split:
    return Split(name, torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(y)))


def _as_clean(test: Split) -> Split:
    """The unshifted test split under its own name (metric names come from split names)."""
    return Split("test_clean", test.x, test.y)


def _shapes(seg: Any, pert: Any, split_seed: int) -> tuple[dict[str, Split], dict[str, Split], dict]:
    from projects.mutual.data.segmentation.shapes import generate

    kw = {"min_shapes": seg.min_shapes, "max_shapes": seg.max_shapes}
    s = seg.image_size
    splits = {name: _tensor(*generate(split_seed, name, n, s, **kw), name)
              for name, n in (("train", seg.n_train), ("val", seg.n_val), ("test", seg.n_test))}
    extra: dict[str, Split] = {}
    info: dict[str, Any] = {}
    if pert.resolution_shift or pert.domain_shift:
        size = seg.shift_image_size if pert.resolution_shift else s
        domains = {"texture_domain": "train", "palette_domain": "train"}
        if pert.domain_shift:
            parts = ("texture", "palette") if seg.domain_shift == "both" else (seg.domain_shift,)
            domains.update({f"{p}_domain": "shifted" for p in parts})
            info["domain_shift"] = list(parts)
        extra["test_clean"] = _as_clean(splits["test"])
        splits["test"] = _tensor(*generate(split_seed, "test", seg.n_test, size, **kw, **domains), "test")
    return splits, extra, info


def _read(dataset: str, path: str | None, seg: Any, pert: Any, d: Any) -> tuple[dict[str, Split], dict[str, Split], int, tuple]:
    from projects.mutual.data.segmentation.sources import load_source, resize_pairs

    raw = load_source(dataset, path, num_classes=seg.num_classes, ignore_index=seg.ignore_index,
                      max_test=d.max_test, test_fraction=d.test_fraction, seed=d.split_seed)
    rng = derived_rng(d.split_seed, "split")
    order = rng.permutation(len(raw.train_images))
    n_val = int(round(d.val_fraction * len(order)))
    val_idx, train_idx = np.sort(order[:n_val]), order[n_val:]
    if d.max_train is not None:
        train_idx = train_idx[:d.max_train]
    train_idx = np.sort(train_idx)
    if n_val == 0 or len(train_idx) == 0 or len(raw.test_images) == 0:
        raise DataError(f"{dataset}: {len(train_idx)} train / {n_val} val / {len(raw.test_images)} test images "
                        f"after splitting; every split needs at least one (check data.val_fraction, data.max_train)")
    pick = lambda items, idx: [items[i] for i in idx]  # noqa: E731
    size = seg.image_size
    splits = {"train": _tensor(*resize_pairs(pick(raw.train_images, train_idx), pick(raw.train_masks, train_idx),
                                             size, seg.ignore_index), "train"),
              "val": _tensor(*resize_pairs(pick(raw.train_images, val_idx), pick(raw.train_masks, val_idx),
                                           size, seg.ignore_index), "val"),
              "test": _tensor(*resize_pairs(raw.test_images, raw.test_masks, size, seg.ignore_index), "test")}
    extra: dict[str, Split] = {}
    if pert.resolution_shift:
        extra["test_clean"] = _as_clean(splits["test"])
        splits["test"] = _tensor(*resize_pairs(raw.test_images, raw.test_masks, seg.shift_image_size,
                                               seg.ignore_index), "test")
    return splits, extra, raw.num_classes, raw.class_names


def load_segmentation(dataset: str, seg: Any, pert: Any, data: Any, *, path: str | None = None,
                      seed: int = 0) -> SegmentationSplits:
    """The run's splits (see the module doc); ``data`` is the ``data`` config section."""
    from projects.mutual.data.segmentation.shapes import CLASSES

    t0 = time.perf_counter()
    if dataset == "shapes":
        splits, extra, info = _shapes(seg, pert, data.split_seed)
        k, names = len(CLASSES), CLASSES
        if data.max_test is not None:
            splits["test"] = splits["test"].subset(torch.arange(min(data.max_test, len(splits["test"]))))
            extra = {n: s.subset(torch.arange(len(splits["test"])), n) for n, s in extra.items()}
    else:
        splits, extra, k, names = _read(dataset, path, seg, pert, data)
        info = {}
    test = splits["test"]
    if pert.corruption != "none":
        gen = derived_generator(seed, f"corruption:{pert.corruption}")
        extra.setdefault("test_clean", _as_clean(test))
        splits["test"] = Split("test", corrupt(test.x, pert.corruption, int(pert.severity), gen), test.y)
    info.update({"corruption": pert.corruption, "severity": int(pert.severity), "load_s": round(time.perf_counter() - t0, 3),
                 "class_pixel_share": _shares(splits["train"].y, k, seg.ignore_index)})
    train = splits["train"]
    return SegmentationSplits(dataset, train, splits["val"], splits["test"], k, tuple(train.x.shape[1:]), extra,
                              info, class_names=tuple(names), ignore_index=seg.ignore_index)


def _shares(y: torch.Tensor, k: int, ignore: int) -> list[float]:
    valid = y[y != ignore]
    counts = torch.bincount(valid.flatten(), minlength=k)[:k].double()
    return [round(float(c), 4) for c in counts / counts.sum().clamp_min(1)]
