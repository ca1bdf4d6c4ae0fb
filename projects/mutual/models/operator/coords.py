"""Where a field's grid points lie, the one convention every operator model reads.

A periodic domain (Burgers' interval, the Navier-Stokes torus) is sampled at x_j = j / s: the
point 1 is the point 0. A bounded one (Darcy's square, with its boundary nodes) at the nodes
x_j = j / (s - 1). Using the other convention would put the same physical point at a
different coordinate on every grid (on the last Darcy node: 21/22 at s = 22, 42/43 at s = 43),
which a model trained on one grid and evaluated on another would read as a shifted domain.
"""
from __future__ import annotations

import torch


def axis(size: int, periodic: bool, device=None, dtype=torch.float32) -> torch.Tensor:
    if periodic:
        return torch.arange(size, device=device, dtype=dtype) / size
    return torch.linspace(0.0, 1.0, size, device=device, dtype=dtype)


def grid(dim: int, size: int, periodic: bool, device=None) -> torch.Tensor:
    """Query coordinates, (s, 1) or (s * s, 2), the first axis slowest."""
    x = axis(size, periodic, device)
    if dim == 1:
        return x.unsqueeze(1)
    return torch.stack(torch.meshgrid(x, x, indexing="ij"), dim=-1).reshape(-1, 2)


def grid_channels(shape, periodic: bool, device=None, dtype=torch.float32) -> torch.Tensor:
    """One coordinate channel per axis for fields of spatial ``shape``: (dim, *shape)."""
    axes = [axis(s, periodic, device, dtype) for s in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)


def default_periodic(dim: int) -> bool:
    """The convention before data said which domain it has: Burgers (1-D) periodic, Darcy (2-D) not."""
    return dim == 1
