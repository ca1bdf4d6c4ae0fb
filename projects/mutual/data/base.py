"""Splits as tensors, and random generators derived from (seed, purpose)."""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch


def _purpose_code(purpose: str) -> int:
    return zlib.crc32(purpose.encode())


def derived_rng(seed: int, purpose: str) -> np.random.Generator:
    """A NumPy generator for one purpose of one seed: independent of every other stream."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, _purpose_code(purpose)]))


def derived_generator(seed: int, purpose: str) -> torch.Generator:
    """The torch counterpart of :func:`derived_rng` (a CPU generator)."""
    value = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, _purpose_code(purpose)]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(value))


@dataclass
class Split:
    """Images ``x`` (N, C, H, W) in [0, 1] and labels ``y`` (N,).

    On a training split with label noise, ``noisy`` marks the flipped labels and
    ``clean_y`` keeps the originals (for diagnostics only: never train on them).
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    noisy: torch.Tensor | None = None
    clean_y: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: Any) -> "Split":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, x=self.x.to(device), y=self.y.to(device), noisy=move(self.noisy),
                       clean_y=move(self.clean_y))

    def subset(self, index: torch.Tensor, name: str | None = None) -> "Split":
        pick = lambda t: None if t is None else t[index]  # noqa: E731
        return Split(name or self.name, self.x[index], self.y[index], pick(self.noisy), pick(self.clean_y))

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x, self.y


@dataclass
class DataSplits:
    """What a task's ``load_data`` returns: the splits and what the models need to know."""

    name: str
    train: Split
    val: Split
    test: Split
    """The test split under the run's condition (corrupted when the condition says so)."""
    num_classes: int
    input_shape: tuple[int, ...]
    extra: dict[str, Split] = field(default_factory=dict)
    """More evaluation splits, e.g. ``test_clean`` when ``test`` is corrupted."""
    info: dict[str, Any] = field(default_factory=dict)

    def eval_splits(self) -> dict[str, Split]:
        """``val``, ``test`` and the extra ones, by name (metric-name segments)."""
        return {"val": self.val, "test": self.test, **self.extra}

    def probe(self, size: int, seed: int = 0) -> Split:
        """A fixed subset of the training split (its possibly noisy labels included) for the
        gradient-dynamics probe: the same samples for a given seed however training runs."""
        n = len(self.train)
        order = torch.from_numpy(derived_rng(seed, "probe").permutation(n)[: min(size, n)])
        return self.train.subset(order, "probe")

    def describe(self) -> dict[str, Any]:
        out = {"dataset": self.name, "num_classes": self.num_classes,
               "input_shape": list(self.input_shape)}
        out.update({f"n_{k}": len(v) for k, v in {"train": self.train, **self.eval_splits()}.items()})
        out.update(self.info)
        return out
