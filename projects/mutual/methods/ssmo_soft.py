"""ssmo-soft: imitate the peer in proportion to how much better it is.

``w_A(x) = sigmoid(k * (L_A(x) - L_B(x)))``: 1/2 on a tie, towards 1 where the peer is
better, towards 0 where it is worse; ``k -> inf`` approaches ssmo-hard.
"""
from __future__ import annotations

import torch

from projects.mutual.methods.base import MutualMethod


class SsmoSoft(MutualMethod):
    name = "ssmo-soft"

    def imitation_weights(self, loss_self: torch.Tensor, loss_peer: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.k * (loss_self - loss_peer))
