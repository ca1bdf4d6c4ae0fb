"""The FNO of ``neuralop`` (Li et al. 2021) on bare fields: (N, s) / (N, s, s) in and out.

The library's lifting/projection MLPs, skips and spectral weights, with two changes that make
the same weights mean the same operator on every grid (the claim a resolution shift tests):

* the spectral layer is :class:`~.spectral.CentredSpectralConv` (neuralop 2.0.0 misplaces
  the modes of odd grids in 2-D; an FNO trained at 22 x 22 scored 63 % at 43 x 43 because of it);
* the coordinate channels are the data's own grid (:mod:`.coords`: j / s on a periodic domain,
  the nodes j / (s - 1) on Darcy's square), not the library's j / s for every domain.

``conv="library"`` / ``embedding="library"`` rebuild the library's behaviour (the bench's
before/after measurement); runs always use the defaults.
"""
from __future__ import annotations

import torch
from torch import nn

from projects.mutual.models.operator.coords import default_periodic, grid_channels

DEFAULT_MODES = {1: 16, 2: 12}


class FieldFNO(nn.Module):
    def __init__(self, dim: int, width: int = 32, depth: int = 4, modes: int | None = None,
                 factorization: str | None = None, rank: float = 1.0, periodic: bool | None = None,
                 conv: str = "centred", embedding: str = "domain"):
        super().__init__()
        from tracking.env import quiet

        quiet()  # neuralop imports wandb: keep it offline and silent
        from neuralop.layers.spectral_convolution import SpectralConv
        from neuralop.models import FNO

        from projects.mutual.models.operator.spectral import CentredSpectralConv

        self.dim = dim
        self.periodic = default_periodic(dim) if periodic is None else bool(periodic)
        self.own_grid = embedding == "domain"
        m = int(modes or DEFAULT_MODES[dim])
        self.net = FNO(n_modes=(m,) * dim, in_channels=1 + dim * self.own_grid, out_channels=1,
                       hidden_channels=int(width), n_layers=int(depth), factorization=factorization, rank=rank,
                       positional_embedding=None if self.own_grid else "grid",
                       conv_module=CentredSpectralConv if conv == "centred" else SpectralConv)
        _allow_init_args(self.net)

    def forward(self, x):
        x = x.unsqueeze(1)
        if self.own_grid:
            coords = grid_channels(x.shape[2:], self.periodic, x.device, x.dtype)
            x = torch.cat([x, coords.expand(x.shape[0], *coords.shape)], dim=1)
        return self.net(x).squeeze(1)


def _allow_init_args(net: nn.Module) -> None:
    """neuralop's state_dict carries the model's init arguments (``_metadata``): its activation
    function and its convolution class. Checkpoints load through an allow-list, so these
    references (code the task itself chose, never called by loading) are registered."""
    from tracking.checkpoint import register_safe_globals

    meta = net.state_dict().get("_metadata", {})
    refs = [v for v in meta.values() if callable(v) and hasattr(v, "__qualname__")]
    register_safe_globals(*refs)


def fno(dim: int, resolution: int, width: int = 32, depth: int = 4, modes: int | None = None,
        periodic: bool | None = None) -> FieldFNO:
    return FieldFNO(dim, width, depth, modes, periodic=periodic)


def tfno(dim: int, resolution: int, width: int = 32, depth: int = 4, modes: int | None = None,
         periodic: bool | None = None) -> FieldFNO:
    """TFNO: Tucker-factorised spectral weights at rank 0.42 of the full tensor (neuralop's
    example setting)."""
    return FieldFNO(dim, width, depth, modes, factorization="tucker", rank=0.42, periodic=periodic)
