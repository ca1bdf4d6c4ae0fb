"""An unstacked DeepONet with a bias (Lu et al. 2021), 1-D and 2-D.

``G(u)(y) = sum_k b_k(u(s_1), ..., u(s_m)) t_k(y) + b0``: the branch reads the input field at
``m`` fixed sensors (a uniform grid; an MLP, or with ``branch="cnn"`` the convolutional branch
Lu et al. 2022 use for 2-D inputs), the trunk MLP the query coordinates ``y``. An input
on any other grid is first interpolated to the sensors (linear along each periodic axis, as
on Burgers' interval and the Navier-Stokes torus; bilinear on the nodes of Darcy's square),
and the output is queried on the input's own grid, so the model maps a field on any
resolution to a field on the same one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from projects.mutual.models.operator.coords import default_periodic, grid


def _mlp(n_in: int, width: int, depth: int, n_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(n_in if i == 0 else width, width), nn.GELU()]
    layers.append(nn.Linear(width if depth else n_in, n_out))
    return nn.Sequential(*layers)


def _periodic_linear(x: torch.Tensor, size: int, axis: int) -> torch.Tensor:
    """Linear interpolation along ``axis`` of a periodic field sampled at j / s."""
    s = x.shape[axis]
    pos = torch.arange(size, device=x.device, dtype=x.dtype) * (s / size)
    i0 = pos.floor().long()
    shape = [1] * x.dim()
    shape[axis] = size
    w = (pos - i0).reshape(shape)
    return x.index_select(axis, i0 % s) * (1 - w) + x.index_select(axis, (i0 + 1) % s) * w


def resample(x: torch.Tensor, size: int, periodic: bool | None = None) -> torch.Tensor:
    """A batch of fields (N, s) / (N, s, s) on another grid: linear along each periodic axis
    (points j / s), bilinear on the nodes j / (s - 1) of a bounded square."""
    if x.shape[-1] == size:
        return x
    if default_periodic(x.dim() - 1) if periodic is None else periodic:
        for axis in range(1, x.dim()):
            x = _periodic_linear(x, size, axis)
        return x
    return F.interpolate(x.unsqueeze(1), size=(size, size), mode="bilinear", align_corners=True).squeeze(1)


class CNNBranch(nn.Module):
    """The branch of Lu et al. (2022) for fields on a grid: stride-2 5 x 5 convolutions
    (``width`` channels, doubling; ReLU), flattened, then a dense layer of ``width`` and the
    ``basis`` coefficients. A dense branch on 85 x 85 sensors must learn locality from 7,225
    independent inputs; convolutions share it across the grid (their Darcy: 2.98 % with it)."""

    def __init__(self, dim: int, sensors: int, width: int, depth: int, basis: int):
        super().__init__()
        conv = nn.Conv1d if dim == 1 else nn.Conv2d
        layers: list[nn.Module] = []
        channels, size = 1, sensors
        for i in range(max(1, depth)):
            out = width // 4 * 2 ** i if width >= 4 else width
            layers += [conv(channels, out, 5, stride=2), nn.ReLU()]
            channels, size = out, (size - 5) // 2 + 1
            if size < 5:
                break
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Sequential(nn.Linear(channels * size ** dim, width), nn.ReLU(), nn.Linear(width, basis))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x.unsqueeze(1)))


class DeepONet(nn.Module):
    def __init__(self, dim: int, resolution: int, width: int = 128, depth: int = 3, basis: int = 128,
                 sensors: int | None = None, periodic: bool | None = None, branch: str = "mlp"):
        super().__init__()
        self.dim, self.sensors = int(dim), int(sensors or resolution)
        self.periodic = default_periodic(self.dim) if periodic is None else bool(periodic)
        self.branch_kind = branch
        if branch == "cnn":
            self.branch = CNNBranch(self.dim, self.sensors, width, depth, basis)
        else:
            self.branch = _mlp(self.sensors ** self.dim, width, depth, basis)
        self.trunk = _mlp(self.dim, width, depth, basis)
        self.bias = nn.Parameter(torch.zeros(()))
        self._queries: dict[tuple, torch.Tensor] = {}

    def _coords(self, size: int, device) -> torch.Tensor:
        key = (size, str(device))
        if key not in self._queries:
            self._queries[key] = grid(self.dim, size, self.periodic, device)
        return self._queries[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-1]
        sensed = resample(x, self.sensors, self.periodic)
        b = self.branch(sensed if self.branch_kind == "cnn" else sensed.flatten(1))   # (N, p)
        t = F.gelu(self.trunk(self._coords(size, x.device)))                           # (Q, p)
        out = b @ t.T + self.bias                                                      # (N, Q)
        return out.reshape(x.shape)
