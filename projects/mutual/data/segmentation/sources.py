"""Image + mask sets read from a local root (nothing is ever downloaded).

==========  =====================================================================================
dataset     ``data.path``
==========  =====================================================================================
voc         the folder holding ``VOCdevkit/VOC2012`` (torchvision's root; the ``VOC2012`` folder
            itself also works): ``JPEGImages``, ``SegmentationClass``,
            ``ImageSets/Segmentation/{train,val}.txt``. 21 classes, 255 = void (object borders).
            ``test`` is VOC's val split (its test masks are not public).
cityscapes  the Cityscapes root: ``leftImg8bit/{train,val}/<city>/*_leftImg8bit.png`` and
            ``gtFine/{train,val}/<city>/*_gtFine_labelIds.png``; label ids are mapped to the 19
            train ids (torchvision's table), the rest to void. ``test`` is the val split.
segfolder   ``<path>/images/<name>.<png|jpg>`` with ``<path>/masks/<name>.png`` (class index per
            pixel, ``seg.ignore_index`` void); or ``<path>/train/{images,masks}`` and
            ``<path>/test/{images,masks}`` (else ``test_fraction`` of the pairs is held out).
==========  =====================================================================================
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from projects.mutual.data import DataError

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class RawPairs:
    """PIL images and masks (uint8 arrays at their own size), before resizing."""

    train_images: list
    train_masks: list
    test_images: list
    test_masks: list
    num_classes: int
    class_names: tuple[str, ...]


def _missing(dataset: str, path: str | None, expected: str) -> DataError:
    where = f"data.path={path}" if path else "data.path is not set"
    return DataError(f"{where}: no {dataset} set there (expected {expected}); put the data on disk yourself "
                     f"and pass --set data.path=<that folder> (nothing is downloaded)")


def _open(path: Path, mode: str):
    from PIL import Image

    with Image.open(path) as im:
        return im.convert(mode) if mode != "P" else im.copy()


def _cap(pairs: list, limit: int | None, seed: int) -> list:
    if limit is None or limit >= len(pairs):
        return pairs
    keep = np.sort(np.random.default_rng(seed).permutation(len(pairs))[:limit])
    return [pairs[i] for i in keep]


def _voc(path: str | None, max_test: int | None, seed: int) -> RawPairs:
    root = Path(path) if path else None
    expected = "<path>/VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation/train.txt,val.txt}"
    cands = [root / "VOCdevkit" / "VOC2012", root] if root else []
    base = next((c for c in cands if (c / "ImageSets" / "Segmentation" / "train.txt").is_file()
                 and (c / "SegmentationClass").is_dir()), None)
    if base is None:
        raise _missing("voc", path, expected)

    def split(name: str, limit: int | None) -> list:
        ids = (base / "ImageSets" / "Segmentation" / f"{name}.txt").read_text().split()
        return _cap([(base / "JPEGImages" / f"{i}.jpg", base / "SegmentationClass" / f"{i}.png") for i in ids],
                    limit, seed)

    tr, te = split("train", None), split("val", max_test)
    return RawPairs(*_load(tr, "voc"), *_load(te, "voc"), len(VOC_CLASSES), VOC_CLASSES)


def _cityscapes(path: str | None, max_test: int | None, seed: int) -> RawPairs:
    root = Path(path) if path else None
    expected = "<path>/leftImg8bit/{train,val}/<city>/*_leftImg8bit.png and <path>/gtFine/{train,val}/<city>/*_gtFine_labelIds.png"
    if root is None or not (root / "leftImg8bit" / "train").is_dir() or not (root / "gtFine" / "train").is_dir():
        raise _missing("cityscapes", path, expected)
    from torchvision.datasets import Cityscapes  # its label table (id -> train id); seconds to import

    table = np.full(256, 255, dtype=np.uint8)
    names = [""] * 19
    for c in Cityscapes.classes:
        if 0 <= c.train_id < 19 and c.id >= 0:
            table[c.id] = c.train_id
            names[c.train_id] = c.name

    def split(name: str, limit: int | None) -> list:
        imgs = sorted((root / "leftImg8bit" / name).glob("*/*_leftImg8bit.png"))
        pairs = [(p, root / "gtFine" / name / p.parent.name / p.name.replace("_leftImg8bit.png", "_gtFine_labelIds.png"))
                 for p in imgs]
        return _cap([q for q in pairs if q[1].is_file()], limit, seed)

    tr, te = split("train", None), split("val", max_test)
    if not tr or not te:
        raise _missing("cityscapes", path, expected)
    (ti, tm), (vi, vm) = _load(tr, "cityscapes"), _load(te, "cityscapes")
    return RawPairs(ti, [table[m] for m in tm], vi, [table[m] for m in vm], 19, tuple(names))


def _folder_pairs(folder: Path) -> list:
    images = {p.stem: p for p in sorted((folder / "images").iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    return [(images[s], folder / "masks" / f"{s}.png") for s in images if (folder / "masks" / f"{s}.png").is_file()]


def _segfolder(path: str | None, num_classes: int | None, ignore: int, max_test: int | None, seed: int,
               test_fraction: float = 0.2) -> RawPairs:
    root = Path(path) if path else None
    expected = "<path>/images/<name>.png|jpg with <path>/masks/<name>.png, or <path>/train/... and <path>/test/..."
    if root is not None and (root / "train" / "images").is_dir():
        tr = _folder_pairs(root / "train")
        te = _folder_pairs(root / "test") if (root / "test" / "images").is_dir() else None
    elif root is not None and (root / "images").is_dir():
        tr, te = _folder_pairs(root), None
    else:
        raise _missing("segfolder", path, expected)
    if not tr:
        raise _missing("segfolder", path, expected + " (no image has a mask of the same name)")
    if te is None:
        order = np.random.default_rng(seed).permutation(len(tr))
        n_test = max(1, int(round(test_fraction * len(tr))))
        te, tr = [tr[i] for i in np.sort(order[:n_test])], [tr[i] for i in np.sort(order[n_test:])]
    (ti, tm), (vi, vm) = _load(tr, "segfolder"), _load(_cap(te, max_test, seed), "segfolder")
    if num_classes is None:
        num_classes = 1 + max(int(m[m != ignore].max(initial=0)) for m in tm + vm)
    return RawPairs(ti, tm, vi, vm, num_classes, tuple(f"class_{i}" for i in range(num_classes)))


def _load(pairs: list, dataset: str) -> tuple[list, list]:
    images, masks = [], []
    for img, mask in pairs:
        try:
            images.append(_open(img, "RGB"))
            masks.append(np.array(_open(mask, "P" if dataset == "voc" else "L")))
        except OSError as exc:
            raise DataError(f"{dataset}: cannot read {img.name} / {mask.name}: {exc}") from None
    return images, masks


def load_source(dataset: str, path: str | None, *, num_classes: int | None = None, ignore_index: int = 255,
                max_test: int | None = None, test_fraction: float = 0.2, seed: int = 0) -> RawPairs:
    """The pairs of a read set (see the module doc); a missing root is a one-line :class:`DataError`."""
    if dataset == "voc":
        raw = _voc(path, max_test, seed)
    elif dataset == "cityscapes":
        raw = _cityscapes(path, max_test, seed)
    elif dataset == "segfolder":
        raw = _segfolder(path, num_classes, ignore_index, max_test, seed, test_fraction)
    else:
        raise DataError(f"unknown segmentation source {dataset!r}; valid: voc, cityscapes, segfolder")
    bad = sorted({int(v) for m in raw.train_masks + raw.test_masks
                  for v in np.unique(m) if v != ignore_index and v >= raw.num_classes})
    if bad:
        raise DataError(f"{dataset}: mask values {bad[:5]} are >= the {raw.num_classes} classes and not "
                        f"seg.ignore_index={ignore_index}; set seg.num_classes or fix the masks")
    return raw


def resize_pairs(images: list, masks: list, size: int, ignore_index: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """Images bilinear, masks nearest, to size x size: (n, 3, s, s) float32 in [0, 1], (n, s, s) int64."""
    from PIL import Image

    x = np.empty((len(images), 3, size, size), dtype=np.float32)
    y = np.empty((len(masks), size, size), dtype=np.int64)
    for i, (im, m) in enumerate(zip(images, masks)):
        x[i] = np.asarray(im.resize((size, size), Image.BILINEAR), dtype=np.float32).transpose(2, 0, 1) / 255.0
        y[i] = np.asarray(Image.fromarray(np.asarray(m, dtype=np.uint8)).resize((size, size), Image.NEAREST))
    return x, y
