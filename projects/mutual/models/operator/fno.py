"""The FNO of ``neuralop`` (Li et al. 2021) on bare fields: (N, s) / (N, s, s) in and out.

The library's own spectral layers, lifting/projection MLPs and grid positional embedding; the
wrapper only adds the channel axis. Resolution-invariant: the same weights evaluate on any grid.
"""
from __future__ import annotations

from torch import nn

DEFAULT_MODES = {1: 16, 2: 12}


class FieldFNO(nn.Module):
    def __init__(self, dim: int, width: int = 32, depth: int = 4, modes: int | None = None,
                 factorization: str | None = None, rank: float = 1.0):
        super().__init__()
        from tracking.env import quiet

        quiet()  # neuralop imports wandb: keep it offline and silent
        from neuralop.models import FNO

        self.dim = dim
        m = int(modes or DEFAULT_MODES[dim])
        self.net = FNO(n_modes=(m,) * dim, in_channels=1, out_channels=1, hidden_channels=int(width),
                       n_layers=int(depth), factorization=factorization, rank=rank)
        _allow_init_args(self.net)

    def forward(self, x):
        return self.net(x.unsqueeze(1)).squeeze(1)


def _allow_init_args(net: nn.Module) -> None:
    """neuralop's state_dict carries the model's init arguments (``_metadata``): its activation
    function and its convolution class. Checkpoints load through an allow-list, so these
    references (code the task itself chose, never called by loading) are registered."""
    from tracking.checkpoint import register_safe_globals

    meta = net.state_dict().get("_metadata", {})
    refs = [v for v in meta.values() if callable(v) and hasattr(v, "__qualname__")]
    register_safe_globals(*refs)


def fno(dim: int, resolution: int, width: int = 32, depth: int = 4, modes: int | None = None) -> FieldFNO:
    return FieldFNO(dim, width, depth, modes)


def tfno(dim: int, resolution: int, width: int = 32, depth: int = 4, modes: int | None = None) -> FieldFNO:
    """TFNO: Tucker-factorised spectral weights at rank 0.42 of the full tensor (neuralop's
    example setting)."""
    return FieldFNO(dim, width, depth, modes, factorization="tucker", rank=0.42)
