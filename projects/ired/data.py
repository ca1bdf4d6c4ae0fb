"""Matrix-inversion data: a fresh random matrix per draw, fixed evaluation sets per seed.

Training draws come from the run's own ``torch.Generator`` (checkpointed, so a resumed run
sees the same stream). Validation, test and OOD sets come from generators seeded only by
the run seed and the set's purpose: they never consume the training stream, so resuming,
changing ``train.steps`` or evaluating more often cannot change what is evaluated.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads lazily: the labrun CLI imports this task at start-up
    import torch

# Offsets that separate the purposes of derived generators (any distinct constants work).
_PURPOSES = {"val": 1, "test": 2, "test_ood": 3, "mean_floor": 4, "diagnostics": 5,
             "eval_noise": 6, "init": 7}
IN_DIST_SHIFT = 0.5
"""Diagonal added by the published generator: ``A = R + R^T + 0.5 I``."""


def derived_generator(seed: int, purpose: str):
    """A CPU generator for one purpose of one run seed, independent of the training stream."""
    import torch

    return torch.Generator().manual_seed(1_000_003 * (int(seed) + 1) + 7919 * _PURPOSES[purpose])


def make_matrices(n: int, count: int, generator, shift: float = IN_DIST_SHIFT):
    """``count`` problems: inputs ``A`` and targets ``inv(A)``, each ``(count, n, n)`` float32.

    The published recipe: ``R ~ U(-1,1)^{n x n}; R = R R^T; A = R + R^T + shift * I``.
    A smaller ``shift`` (0.1 for OOD) makes ``A`` worse conditioned. Inversion runs in
    float64 so the targets are exact to float32 precision.
    """
    import torch

    r = torch.rand(count, n, n, generator=generator, dtype=torch.float64) * 2 - 1
    r = r @ r.transpose(-1, -2)
    a = r + r.transpose(-1, -2) + shift * torch.eye(n, dtype=torch.float64)
    inv = torch.linalg.inv(a)
    return a.float(), inv.float()


def flat(a, inv):
    """Matrices -> the flattened ``(x, y)`` the models see (``n*n`` dims each)."""
    return a.flatten(1), inv.flatten(1)


@dataclass
class EvalSet:
    """A fixed set of problems (flattened) for one purpose."""

    name: str
    x: "torch.Tensor"
    y: "torch.Tensor"

    def to(self, device) -> "EvalSet":
        return EvalSet(self.name, self.x.to(device), self.y.to(device))


class MatrixInverseData:
    """The task's data: a training stream plus fixed val/test/OOD sets for one seed."""

    def __init__(self, n: int, seed: int, *, n_val: int, n_test: int, ood_shift: float,
                 device=None) -> None:
        self.n = n
        self.seed = seed
        self.ood_shift = ood_shift
        self.device = device
        self.val = self._fixed("val", n_val, IN_DIST_SHIFT)
        self.test = self._fixed("test", n_test, IN_DIST_SHIFT)
        self.test_ood = self._fixed("test_ood", n_test, ood_shift)

    @property
    def dim(self) -> int:
        return self.n * self.n

    def _fixed(self, name: str, count: int, shift: float) -> EvalSet:
        x, y = flat(*make_matrices(self.n, count, derived_generator(self.seed, name), shift))
        s = EvalSet(name, x, y)
        return s.to(self.device) if self.device is not None else s

    def batch(self, batch_size: int, generator):
        """One fresh training batch ``(x, y)`` drawn from ``generator`` (the training stream)."""
        x, y = flat(*make_matrices(self.n, batch_size, generator))
        if self.device is not None:
            x, y = x.to(self.device), y.to(self.device)
        return x, y

    def target_mean(self, count: int = 10_000):
        """Per-entry mean of training targets (a floor predictor), from its own generator."""
        _, y = flat(*make_matrices(self.n, count, derived_generator(self.seed, "mean_floor")))
        m = y.mean(0)
        return m.to(self.device) if self.device is not None else m
