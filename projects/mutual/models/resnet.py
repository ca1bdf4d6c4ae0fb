"""torchvision's ResNet-18 (random init, never downloaded) adapted to small images.

The ImageNet stem (7x7 stride-2 conv + max-pool) would shrink a 32x32 CIFAR image to 8x8
before the first block and an 8x8 digit to 2x2; the usual CIFAR adaptation replaces it with
a 3x3 stride-1 conv (taking any number of input channels, e.g. 1 for digits/MNIST) and drops
the max-pool. The global average pool makes any input size down to 8x8 work.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn


def resnet18_small(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    from torchvision.models import resnet18

    if len(input_shape) != 3:
        raise ValueError(f"resnet18 needs (channels, height, width) inputs, got shape {tuple(input_shape)}")
    model = resnet18(weights=None, num_classes=num_classes)
    model.conv1 = nn.Conv2d(int(input_shape[0]), 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model
