"""naive: Deep Mutual Learning (Zhang et al., CVPR 2018): imitate the peer everywhere.

``L_A + lam * D(A || stop_grad(B))`` and symmetrically; the weight is 1 on every element.
"""
from __future__ import annotations

import torch

from projects.mutual.methods.base import MutualMethod


class Naive(MutualMethod):
    name = "naive"

    def imitation_weights(self, loss_self: torch.Tensor, loss_peer: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(loss_self)
