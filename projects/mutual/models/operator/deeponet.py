"""An unstacked DeepONet with a bias (Lu et al. 2021), 1-D and 2-D.

``G(u)(y) = sum_k b_k(u(s_1), ..., u(s_m)) t_k(y) + b0``: the branch MLP reads the input field
at ``m`` fixed sensors (a uniform grid), the trunk MLP the query coordinates ``y``. An input
on any other grid is first interpolated to the sensors (linear, periodic in 1-D as Burgers is;
bilinear on the nodes of the unit square in 2-D), and the output is queried on the input's
own grid, so the model maps a field on any resolution to a field on the same one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _mlp(n_in: int, width: int, depth: int, n_out: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(n_in if i == 0 else width, width), nn.GELU()]
    layers.append(nn.Linear(width if depth else n_in, n_out))
    return nn.Sequential(*layers)


def grid(dim: int, size: int, device=None) -> torch.Tensor:
    """Query coordinates of a grid: periodic x_j = j / s in 1-D, nodes j / (s - 1) in 2-D;
    (s, 1) or (s * s, 2)."""
    if dim == 1:
        return (torch.arange(size, device=device, dtype=torch.float32) / size).unsqueeze(1)
    x = torch.linspace(0.0, 1.0, size, device=device)
    return torch.stack(torch.meshgrid(x, x, indexing="ij"), dim=-1).reshape(-1, 2)


def resample(x: torch.Tensor, size: int) -> torch.Tensor:
    """A batch of fields on another grid: (N, s) periodic-linear, (N, s, s) bilinear."""
    if x.shape[-1] == size:
        return x
    if x.dim() == 2:
        s = x.shape[1]
        pos = torch.arange(size, device=x.device, dtype=x.dtype) * (s / size)
        i0 = pos.floor().long()
        w = pos - i0
        return x[:, i0 % s] * (1 - w) + x[:, (i0 + 1) % s] * w
    return F.interpolate(x.unsqueeze(1), size=(size, size), mode="bilinear", align_corners=True).squeeze(1)


class DeepONet(nn.Module):
    def __init__(self, dim: int, resolution: int, width: int = 128, depth: int = 3, basis: int = 128,
                 sensors: int | None = None):
        super().__init__()
        self.dim, self.sensors = int(dim), int(sensors or resolution)
        self.branch = _mlp(self.sensors ** self.dim, width, depth, basis)
        self.trunk = _mlp(self.dim, width, depth, basis)
        self.bias = nn.Parameter(torch.zeros(()))
        self._queries: dict[tuple, torch.Tensor] = {}

    def _coords(self, size: int, device) -> torch.Tensor:
        key = (size, str(device))
        if key not in self._queries:
            self._queries[key] = grid(self.dim, size, device)
        return self._queries[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-1]
        b = self.branch(resample(x, self.sensors).flatten(1))             # (N, p)
        t = F.gelu(self.trunk(self._coords(size, x.device)))            # (Q, p)
        out = b @ t.T + self.bias                                         # (N, Q)
        return out.reshape(x.shape)
