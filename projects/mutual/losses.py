"""Per-element divergences that tasks hand to the method layer (``divergence(student, teacher)``).

Each returns one value per element of the task's per-element loss, so a method's mask or
weight applies element by element. The teacher arrives already detached (the method does
that); these functions never detach anything themselves.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
                  dim: int = 1) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` over the class axis ``dim``.

    The direction of Deep Mutual Learning (the student matches the peer's distribution);
    the ``T^2`` factor (Hinton et al., 2015) keeps gradient magnitudes comparable across
    temperatures (it is 1 at DML's T = 1). (N, C) logits give (N,); (N, C, H, W) give (N, H, W).
    """
    log_p = F.log_softmax(student_logits / temperature, dim=dim)
    log_q = F.log_softmax(teacher_logits / temperature, dim=dim)
    return (log_q.exp() * (log_q - log_p)).sum(dim=dim) * (temperature * temperature)


def mse_divergence(student: torch.Tensor, teacher: torch.Tensor, reduce_dims: tuple[int, ...] | None = None) -> torch.Tensor:
    """Squared error between predictions, averaged over ``reduce_dims`` (default: every dim
    but the batch, giving one value per sample; ``()`` keeps every element)."""
    err = (student - teacher) ** 2
    dims = tuple(range(1, err.dim())) if reduce_dims is None else reduce_dims
    return err.mean(dim=dims) if dims else err
