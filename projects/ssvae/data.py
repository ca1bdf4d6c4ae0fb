"""Data for the SSVAE: images in [0, 1], a held-out split and a labelled subset, fixed per seed.

scikit-learn's bundled ``digits`` (1,797 8x8 images) is the default because it ships with
the library: no download, ever. torchvision datasets are read only from files the user
already has (``data.root``); a missing folder is a clear error, never a download.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST"}
DATASETS = ("digits", *TORCHVISION)


class DataError(ValueError):
    """Data that cannot be loaded as configured; the message is one line and says what to do."""


@dataclass
class SplitData:
    """Flat float32 images in [0, 1] with integer labels and a labelled mask on train.

    ``labelled`` marks the fraction of train whose labels the model may see; the other
    train labels are used only to measure transductive accuracy, never in the loss.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    labelled: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    image_shape: tuple[int, int]
    num_classes: int
    name: str

    @property
    def num_features(self) -> int:
        return int(self.x_train.shape[1])

    def describe(self) -> dict[str, Any]:
        return {"dataset": self.name, "train": int(len(self.y_train)), "test": int(len(self.y_test)),
                "labelled": int(self.labelled.sum()), "num_classes": self.num_classes,
                "image_shape": list(self.image_shape)}


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, tuple[int, int]]:
    """The file ``load_digits`` reads, read directly: importing ``sklearn.datasets`` costs
    seconds on a busy machine, the CSV milliseconds. Falls back to ``load_digits``."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")
    path = Path(next(iter(spec.submodule_search_locations or []), "")) / "datasets" / "data" / "digits.csv.gz"
    if path.is_file():
        raw = np.loadtxt(path, delimiter=",", dtype=np.float32)
        x, y = raw[:, :-1], raw[:, -1].astype(np.int64)
    else:
        from sklearn.datasets import load_digits

        d = load_digits()
        x, y = d.data.astype(np.float32), d.target.astype(np.int64)
    return x / 16.0, y, None, None, (8, 8)


def _torchvision(name: str, root: str | None):
    if not root:
        raise DataError(f"data.dataset={name!r} needs data.root pointing at a folder that already "
                        f"holds the torchvision files (nothing is downloaded); or use data.dataset=digits")
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise DataError(f"data.root {str(folder)!r} is not a folder; point it at the directory that "
                        f"holds {TORCHVISION[name]}/raw (nothing is downloaded)")
    raw = folder / TORCHVISION[name] / "raw"
    if not raw.is_dir():  # checked before importing torchvision (slow) to fail fast
        raise DataError(f"{TORCHVISION[name]} not found under data.root {str(folder)!r}: expected "
                        f"{str(raw)!r} with the original files; place them there first, nothing is "
                        f"downloaded at run time")
    import torchvision

    cls = getattr(torchvision.datasets, TORCHVISION[name])
    try:
        train = cls(str(folder), train=True, download=False)
        test = cls(str(folder), train=False, download=False)
    except RuntimeError as exc:  # torchvision: "Dataset not found. You can use download=True ..."
        raise DataError(f"{TORCHVISION[name]} not found under data.root {str(folder)!r} "
                        f"({str(exc).splitlines()[0].split('.')[0]}); place the files there first, "
                        f"nothing is downloaded at run time") from None

    def arrays(ds):
        x = ds.data.numpy().reshape(len(ds), -1).astype(np.float32) / 255.0
        return x, ds.targets.numpy().astype(np.int64)

    xtr, ytr = arrays(train)
    xte, yte = arrays(test)
    side = int(train.data.shape[1])
    return xtr, ytr, xte, yte, (side, int(train.data.shape[2]))


def load(dataset: str = "digits", *, root: str | None = None, labelled_fraction: float = 0.1,
         test_fraction: float = 0.2, max_train: int | None = None, seed: int = 0) -> SplitData:
    """Load, split and choose the labelled subset; the same seed gives the same split.

    The labelled subset is stratified (every class gets its share), as in the usual
    "N labels per class" semi-supervised protocol.
    """
    if dataset not in DATASETS:
        raise DataError(f"unknown data.dataset {dataset!r}; valid: {', '.join(DATASETS)}")
    if not 0.0 < labelled_fraction <= 1.0:
        raise DataError(f"data.labelled_fraction must be in (0, 1], got {labelled_fraction}")
    rng = np.random.RandomState(seed)
    if dataset == "digits":
        x, y, _, _, shape = _digits()
        if not 0.0 < test_fraction < 1.0:
            raise DataError(f"data.test_fraction must be in (0, 1), got {test_fraction}")
        order = rng.permutation(len(y))
        n_test = int(round(test_fraction * len(y)))
        test_idx, train_idx = order[:n_test], order[n_test:]
        xtr, ytr, xte, yte = x[train_idx], y[train_idx], x[test_idx], y[test_idx]
    else:
        xtr, ytr, xte, yte, shape = _torchvision(dataset, root)
    if max_train is not None and max_train < len(ytr):
        keep = np.sort(rng.permutation(len(ytr))[:max_train])
        xtr, ytr = xtr[keep], ytr[keep]
    classes = np.unique(np.concatenate([ytr, yte]))
    labelled = np.zeros(len(ytr), dtype=bool)
    for c in classes:
        idx = np.flatnonzero(ytr == c)
        n = max(1, int(round(labelled_fraction * len(idx)))) if len(idx) else 0
        labelled[rng.permutation(idx)[:n]] = True
    return SplitData(xtr, ytr, labelled, xte, yte, shape, int(classes.max()) + 1, dataset)
