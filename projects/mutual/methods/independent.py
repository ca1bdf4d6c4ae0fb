"""independent: each peer minimises its own task loss; no imitation (the baseline)."""
from __future__ import annotations

import torch

from projects.mutual.methods.base import MutualMethod


class Independent(MutualMethod):
    name = "independent"
    imitates = False

    def imitation_weights(self, loss_self: torch.Tensor, loss_peer: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(loss_self)
