"""A multilayer perceptron over flattened inputs."""
from __future__ import annotations

import math
from typing import Sequence

from torch import nn


class MLP(nn.Sequential):
    def __init__(self, input_shape: Sequence[int], num_classes: int, width: int = 256,
                 depth: int = 2, dropout: float = 0.0):
        layers: list[nn.Module] = [nn.Flatten()]
        features = math.prod(input_shape)
        for _ in range(depth):
            layers += [nn.Linear(features, width), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            features = width
        layers.append(nn.Linear(features, num_classes))
        super().__init__(*layers)
