"""A small VGG-style CNN that fits any image size down to 1x1 (digits are 8x8)."""
from __future__ import annotations

from typing import Sequence

from torch import nn


class SmallCNN(nn.Sequential):
    """``depth`` blocks of 3x3 conv (``width``, doubling per block), BatchNorm, ReLU and a
    2x2 max-pool while the feature map is at least 2 pixels; then global average pooling,
    dropout and a linear classifier."""

    def __init__(self, input_shape: Sequence[int], num_classes: int, width: int = 32,
                 depth: int = 2, dropout: float = 0.0):
        if len(input_shape) != 3:
            raise ValueError(f"cnn needs (channels, height, width) inputs, got shape {tuple(input_shape)}")
        channels, height, wide = input_shape
        layers: list[nn.Module] = []
        out = width
        for _ in range(depth):
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            if min(height, wide) >= 2:
                layers.append(nn.MaxPool2d(2))
                height, wide = height // 2, wide // 2
            channels, out = out, out * 2
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(channels, num_classes))
        super().__init__(*layers)
