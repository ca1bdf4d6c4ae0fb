"""Classification models by name: shapes, size keys, small-input ResNet-18, clear errors."""
from __future__ import annotations

import pytest
import torch

from projects.mutual.models import build_model, check_model, model_names
from projects.mutual.registry import UnknownNameError


@pytest.mark.parametrize("name, sizes", [("mlp", {"width": 16, "depth": 3}), ("cnn", {"width": 4, "depth": 4}),
                                         ("mlp", {}), ("cnn", {"dropout": 0.2})])
def test_mlp_and_cnn_fit_digits_and_cifar_shapes(name, sizes):
    for shape in ((1, 8, 8), (3, 32, 32)):
        model = build_model(name, shape, 7, **sizes)
        assert model(torch.rand(2, *shape)).shape == (2, 7)


def test_width_is_the_size_knob():
    small = build_model("cnn", (1, 8, 8), 10, width=4)
    big = build_model("cnn", (1, 8, 8), 10, width=8)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(small) < count(big)
    assert build_model("mlp", (1, 8, 8), 10, width=5)[1].out_features == 5


def test_resnet18_adapted_to_small_one_channel_inputs():
    model = build_model("resnet18", (1, 8, 8), 10)
    assert model.conv1.in_channels == 1 and model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.Identity)
    model.eval()
    assert model(torch.rand(2, 1, 8, 8)).shape == (2, 10)


def test_unknown_model_and_unsupported_sizes_are_one_line():
    with pytest.raises(UnknownNameError) as exc:
        build_model("vgg16", (1, 8, 8), 10)
    msg = str(exc.value)
    assert "\n" not in msg and "'vgg16'" in msg and all(n in msg for n in model_names())
    with pytest.raises(ValueError) as exc:
        check_model("resnet18", {"width": 32})
    assert "\n" not in str(exc.value) and "fixed" in str(exc.value)
    assert set(model_names()) == {"mlp", "cnn", "resnet18"}
