"""Models by name: classification ``build_model(name, input_shape, num_classes, **sizes)``,
operator learning ``build_operator(name, dim, resolution, **sizes)``; each model's ``problem``
says which data it takes (``Config`` rejects a model that does not fit the run's problem).

==========  ===================================================  ======================
name        what                                                  size keys (default)
==========  ===================================================  ======================
mlp         flatten -> depth x (Linear, ReLU, Dropout) -> Linear  width (256), depth (2),
                                                                  dropout (0)
cnn         depth x (3x3 conv, BN, ReLU, 2x2 max-pool while the  width (32), depth (2),
            map is >= 2 px), channels doubling, global average   dropout (0)
            pool, Dropout, Linear
resnet18    torchvision ``resnet18(weights=None)`` for small      none (torchvision's
            inputs: 3x3 stride-1 stem for any channel count, no  fixed widths)
            max-pool
==========  ===================================================  ======================

Operator learning (``problem=operator``; :mod:`projects.mutual.models.operator`,
``build_operator(name, dim, resolution, **sizes)``):

==========  ===================================================  ======================
fno         ``neuralop.models.FNO`` 1-D / 2-D (grid positional    width (32), depth (4),
            embedding, lifting/projection channel MLPs)           modes (16 in 1-D,
                                                                  12 in 2-D)
tfno        the same with a Tucker-factorised spectral weight      width, depth, modes
deeponet    unstacked DeepONet with a bias: branch MLP on the    width (128), depth (3),
            input at fixed sensors (interpolated from any grid),  basis (128), sensors
            trunk MLP on the query coordinates; branch=cnn: the  (training grid),
            convolutional branch of Lu et al. 2022               branch (mlp)
gnot        a small GNOT (Hao et al. 2023): point tokens, linear  width (64), depth (3)
            cross- and self-attention, coordinate-gated experts
==========  ===================================================  ======================

Time series (``problem=timeseries``; :mod:`projects.mutual.models.series`,
``build_forecaster(name, lookback, horizon, channels, outputs, **sizes)``):

==========  ===================================================  ======================
dlinear     DLinear: moving-average trend (25 steps) + seasonal  none (two L x H
            remainder, one linear map over time each, shared by  linear layers)
            the channels
lstm        LSTM over the window, linear head: last hidden state  width (64), depth (1),
            -> the whole horizon                                  dropout (0)
patchtst    channel-independent Transformer encoder on patches   width (32), depth (2),
            (16 / stride 8) of the window, flatten head          dropout (0)
==========  ===================================================  ======================

Segmentation (``problem=segmentation``; :mod:`projects.mutual.models.segmentation`,
``build_segmenter(name, in_channels, num_classes, **sizes)``; (N, C, H, W) -> logits (N, K, H, W)):

==========  ===================================================  ======================
unet        U-Net: depth max-pool levels (channels width x 2^l),  width (16), depth (3),
            bilinear up, skip concat, double 3x3 convs, BN        dropout (0)
fcn         FCN-16s-style: depth stride-2 stages, dilated        width (16), depth (3),
            context conv, scores of the last two fused, bilinear  dropout (0)
lraspp      torchvision LR-ASPP MobileNetV3-Large, weights=None,  none (3.2 M params;
            weights_backbone=None                                 ~3x a unet step on CPU)
==========  ===================================================  ======================

The table below (:data:`MODELS`) is torch-free: the config schema checks model names and
which size keys a model takes before any run exists; torch loads in :func:`build_model`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from projects.mutual.registry import LazyRegistry, unknown

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    target: str
    """``module:callable(input_shape, num_classes, **sizes) -> nn.Module``."""
    sizes: dict
    """Size keys the model takes, with their defaults (None: decided by the data)."""
    problem: str = "classification"
    """The problem whose data the model takes (``Config`` checks the pair fits)."""


MODELS: dict[str, ModelSpec] = {
    "mlp": ModelSpec("projects.mutual.models.mlp:MLP", {"width": 256, "depth": 2, "dropout": 0.0}),
    "cnn": ModelSpec("projects.mutual.models.cnn:SmallCNN", {"width": 32, "depth": 2, "dropout": 0.0}),
    "resnet18": ModelSpec("projects.mutual.models.resnet:resnet18_small", {}),
    "fno": ModelSpec("projects.mutual.models.operator.fno:fno", {"width": 32, "depth": 4, "modes": None},
                     "operator"),
    "tfno": ModelSpec("projects.mutual.models.operator.fno:tfno", {"width": 32, "depth": 4, "modes": None},
                      "operator"),
    "deeponet": ModelSpec("projects.mutual.models.operator.deeponet:DeepONet",
                          {"width": 128, "depth": 3, "basis": 128, "sensors": None, "branch": "mlp"},
                          "operator"),
    "gnot": ModelSpec("projects.mutual.models.operator.gnot:GNOT", {"width": 64, "depth": 3}, "operator"),
    "dlinear": ModelSpec("projects.mutual.models.series.dlinear:DLinear", {}, "timeseries"),
    "lstm": ModelSpec("projects.mutual.models.series.lstm:LSTMForecaster",
                      {"width": 64, "depth": 1, "dropout": 0.0}, "timeseries"),
    "patchtst": ModelSpec("projects.mutual.models.series.patchtst:PatchTST",
                          {"width": 32, "depth": 2, "dropout": 0.0}, "timeseries"),
    "unet": ModelSpec("projects.mutual.models.segmentation.unet:UNet",
                      {"width": 16, "depth": 3, "dropout": 0.0}, "segmentation"),
    "fcn": ModelSpec("projects.mutual.models.segmentation.fcn:FCN",
                     {"width": 16, "depth": 3, "dropout": 0.0}, "segmentation"),
    "lraspp": ModelSpec("projects.mutual.models.segmentation.fcn:LRASPP", {}, "segmentation"),
}
SIZE_KEYS = ("width", "depth", "dropout", "modes", "basis", "sensors", "branch")
_REGISTRY = LazyRegistry("model", {name: spec.target for name, spec in MODELS.items()})


def model_names(problem: str | None = "classification") -> tuple[str, ...]:
    """The models that take ``problem``'s data (None: every model)."""
    return tuple(n for n, spec in MODELS.items() if problem is None or spec.problem == problem)


def check_model(name: str, sizes: dict[str, Any] | None = None, key: str | None = "model") -> str:
    """``name`` if it exists and takes every size given (not None); else one line."""
    if name not in MODELS:
        raise unknown("model", name, model_names(None))
    given = {k: v for k, v in (sizes or {}).items() if v is not None}
    extra = sorted(set(given) - set(MODELS[name].sizes))
    if extra:
        pre = f"{key}." if key else ""
        takes = (f"{name} takes {', '.join(pre + k for k in MODELS[name].sizes)}" if MODELS[name].sizes
                 else f"{name} has fixed sizes")
        raise ValueError(f"{pre}name={name} does not take {', '.join(pre + e for e in extra)}; "
                         f"{takes}; leave the others unset")
    return name


def model_sizes(name: str, sizes: dict[str, Any] | None = None) -> dict[str, Any]:
    """The model's defaults updated with the sizes given (None = default)."""
    check_model(name, sizes)
    out = dict(MODELS[name].sizes)
    out.update({k: v for k, v in (sizes or {}).items() if v is not None})
    return out


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **sizes: Any) -> "nn.Module":
    """A fresh model; ``input_shape`` is ``(channels, height, width)`` (or any shape for mlp)."""
    _takes(name, "classification")
    factory = _REGISTRY.get(check_model(name, sizes))
    return factory(tuple(int(s) for s in input_shape), int(num_classes), **model_sizes(name, sizes))


def build_operator(name: str, dim: int, resolution: int, periodic: bool | None = None, **sizes: Any) -> "nn.Module":
    """A fresh operator model mapping (N, s) / (N, s, s) fields to fields of the same grid;
    ``resolution`` is the training grid (DeepONet's default sensors); ``periodic``: the domain
    is sampled at j / s (Burgers, Navier-Stokes) rather than at the nodes j / (s - 1) (Darcy);
    None keeps the 1-D-periodic, 2-D-nodes convention."""
    _takes(name, "operator")
    factory = _REGISTRY.get(check_model(name, sizes))
    return factory(int(dim), int(resolution), periodic=periodic, **model_sizes(name, sizes))


def build_forecaster(name: str, lookback: int, horizon: int, channels: int, outputs: Sequence[int],
                     **sizes: Any) -> "nn.Module":
    """A fresh forecaster ``(N, lookback, channels) -> (N, horizon, len(outputs))``; ``outputs``
    index the forecast channels among the inputs."""
    _takes(name, "timeseries")
    factory = _REGISTRY.get(check_model(name, sizes))
    return factory(int(lookback), int(horizon), int(channels), [int(i) for i in outputs],
                   **model_sizes(name, sizes))


def build_segmenter(name: str, in_channels: int, num_classes: int, **sizes: Any) -> "nn.Module":
    """A fresh segmenter: images (N, in_channels, H, W) -> class logits (N, num_classes, H, W), any H, W."""
    _takes(name, "segmentation")
    factory = _REGISTRY.get(check_model(name, sizes))
    return factory(int(in_channels), int(num_classes), **model_sizes(name, sizes))


def check_fits(name: str, problem: str, key: str = "model") -> None:
    """One line when model ``name`` does not take ``problem``'s data."""
    spec = MODELS[check_model(name)]
    if spec.problem != problem:
        raise ValueError(f"{key}.name={name} is a {spec.problem} model and does not fit problem={problem}; "
                         f"valid for {problem}: {', '.join(model_names(problem))}")


def _takes(name: str, problem: str) -> None:
    if name in MODELS:
        check_fits(name, problem)
