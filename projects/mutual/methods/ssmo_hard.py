"""ssmo-hard: imitate the peer only where the peer's task loss is strictly lower.

``m_A(x) = 1[L_B(x) < L_A(x)]`` (a tie imitates nothing), applied per element.
"""
from __future__ import annotations

import torch

from projects.mutual.methods.base import MutualMethod


class SsmoHard(MutualMethod):
    name = "ssmo-hard"

    def imitation_weights(self, loss_self: torch.Tensor, loss_peer: torch.Tensor) -> torch.Tensor:
        return (loss_peer < loss_self).to(loss_self.dtype)
