"""Which grids a generator's fine grid can be subsampled to (torch-free: the config checks it)."""
from __future__ import annotations

from typing import Any

DEFAULT_RESOLUTION = {"burgers": 1024, "darcy": 85, "navier_stokes": 64}
SHIFT_RESOLUTION = {"burgers": 256, "darcy": 43, "navier_stokes": 32}
NODE_GRIDS = ("darcy",)
"""Datasets sampled at the nodes j / (s - 1) of a bounded domain; the others are periodic (j / s)."""


def fits(dataset: str, fine: int, res: int) -> bool:
    if dataset not in NODE_GRIDS:
        return res <= fine and fine % res == 0
    return 2 <= res <= fine and (fine - 1) % (res - 1) == 0


def check_grids(dataset: str, pde: Any) -> None:
    fine = getattr(pde, dataset).fine_resolution
    for key, res in (("pde.resolution", pde.resolution or DEFAULT_RESOLUTION[dataset]),
                     ("pde.shift_resolution", pde.shift_resolution or SHIFT_RESOLUTION[dataset])):
        if not fits(dataset, fine, res):
            rule = (f"a divisor of pde.{dataset}.fine_resolution={fine}" if dataset not in NODE_GRIDS else
                    f"(r - 1) dividing pde.{dataset}.fine_resolution - 1 = {fine - 1}")
            raise ValueError(f"{key}={res} is not a subsampling of the {dataset} fine grid: it needs {rule}")
