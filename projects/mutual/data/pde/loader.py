"""The operator-learning splits of one run: generated (or read from the cache), subsampled,
normalised, with the run's condition applied.

* train / val / test are independent draws, fixed by ``data.split_seed`` (every run seed and
  condition sees the same samples); each is solved once on the fine grid and subsampled;
* ``resolution_shift``: train and val at ``pde.shift_resolution`` (Burgers 256, Darcy 43, NS 32), test
  at ``pde.resolution``; ``test_clean`` is the same test samples at the training resolution;
* ``viscosity_shift`` (Burgers, Navier-Stokes) / ``coefficient_shift`` (Darcy): test drawn
  with ``pde.<dataset>.test_viscosity`` / ``pde.darcy.test_high, test_low``; ``test_clean``
  keeps the training physics;
* inputs and targets are standardised with the training split's scalar mean and std
  (``OperatorSplits.scale``): the models see O(1) fields, metrics are in physical units.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from projects.mutual.data.base import DataSplits, Split, derived_rng
from projects.mutual.data.pde import cache
from projects.mutual.data.pde.grids import DEFAULT_RESOLUTION, NODE_GRIDS, SHIFT_RESOLUTION

DIMS = {"burgers": 1, "darcy": 2, "navier_stokes": 2}


@dataclass
class OperatorSplits(DataSplits):
    """:class:`DataSplits` of fields: ``x``/``y`` are (N, s) or (N, s, s), standardised."""

    dim: int = 1
    resolution: int = 0
    """Training resolution (DeepONet's sensor grid)."""
    periodic: bool = True
    """The grid convention of the domain (:mod:`projects.mutual.models.operator.coords`)."""
    scale: dict[str, float] = field(default_factory=dict)
    """``x_mean, x_std, y_mean, y_std`` of the training split (decode: y * y_std + y_mean)."""

    def describe(self) -> dict[str, Any]:
        out = {"dataset": self.name, "dim": self.dim, "resolution": self.resolution,
               "resolutions": {k: list(v.x.shape[1:]) for k, v in {"train": self.train, **self.eval_splits()}.items()}}
        out.update({f"n_{k}": len(v) for k, v in {"train": self.train, **self.eval_splits()}.items()})
        out.update({"scale": self.scale, **self.info})
        return out


def _physics(dataset: str, pde: Any, shifted: bool) -> dict[str, Any]:
    if dataset in ("burgers", "navier_stokes"):
        b = getattr(pde, dataset)
        return {"viscosity": b.test_viscosity if shifted else b.viscosity, "time": b.time, "dt": b.dt,
                "fine_resolution": b.fine_resolution}
    d = pde.darcy
    return {"high": d.test_high if shifted else d.high, "low": d.test_low if shifted else d.low,
            "fine_resolution": d.fine_resolution}


def _subsample(arr: np.ndarray, fine: int, res: int, dim: int) -> np.ndarray:
    step = fine // res if dim == 1 else (fine - 1) // (res - 1)
    return arr[:, ::step] if dim == 1 else arr[:, ::step, ::step]


def _solve(dataset: str, solve: dict[str, Any], n: int, seed: int, purpose: str, bar) -> tuple:
    from projects.mutual.data.pde.burgers import generate_burgers
    from projects.mutual.data.pde.darcy import generate_darcy
    from projects.mutual.data.pde.navier_stokes import generate_navier_stokes

    rng = derived_rng(seed, f"pde/{dataset}/{purpose}")
    if dataset == "darcy":
        return generate_darcy(rng, n, fine_resolution=solve["fine_resolution"], high=solve["high"],
                              low=solve["low"], progress=bar.update)
    generate = generate_burgers if dataset == "burgers" else generate_navier_stokes
    xs, ys, chunk = [], [], 50  # chunks: a live bar, bounded memory at 8192 points
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x, y = generate(rng, m, fine_resolution=solve["fine_resolution"], viscosity=solve["viscosity"],
                        time=solve["time"], dt=solve["dt"])
        xs.append(x)
        ys.append(y)
        bar.update(m)
    return np.concatenate(xs), np.concatenate(ys)


def _from_sibling(folder, spec: dict[str, Any], candidates: list[int]) -> dict | None:
    """The entry subsampled from a cached finer grid of the same draw (identical values: both
    are subsamplings of one fine solution), instead of solving again."""
    from projects.mutual.data.pde.grids import fits

    dataset, res = spec["dataset"], spec["resolution"]
    for cand in sorted(set(candidates), reverse=True):
        if cand == res or not fits(dataset, cand, res) or not fits(dataset, spec["fine_resolution"], cand):
            continue
        got = cache.read_entry(folder, cache.cache_key({**spec, "resolution": cand}))
        if got is not None:
            return {k: _subsample(v, cand, res, DIMS[dataset]) for k, v in got.items()}
    return None


def _generate(dataset: str, wanted: dict[str, dict[str, Any]], names: list[str], folder=None,
              candidates: list[int] = ()) -> dict[str, dict]:
    """Solve each distinct (split, physics) once on the fine grid; subsample to every
    resolution asked for (or from a cached finer grid of the same draw)."""
    from tracking.progress import progress

    out: dict[str, dict] = {}
    if folder is not None:
        for name in list(names):
            got = _from_sibling(folder, wanted[name], list(candidates))
            if got is not None:
                out[name] = got
        names = [n for n in names if n not in out]
    groups: dict[str, list[str]] = {}
    for name in names:
        spec = wanted[name]
        solve_key = cache.cache_key({k: v for k, v in spec.items() if k != "resolution"})
        groups.setdefault(solve_key, []).append(name)
    total = sum(wanted[g[0]]["n"] for g in groups.values())
    if not groups:
        return out
    bar = progress(None, total=total, desc=f"generating {dataset} ({total} samples)")
    try:
        for members in groups.values():
            spec = wanted[members[0]]
            solve = {k: spec[k] for k in spec if k not in ("dataset", "split", "n", "seed", "resolution")}
            x, y = _solve(dataset, solve, spec["n"], spec["seed"], spec["split"], bar)
            for name in members:
                res = wanted[name]["resolution"]
                out[name] = {"x": _subsample(x, solve["fine_resolution"], res, DIMS[dataset]),
                             "y": _subsample(y, solve["fine_resolution"], res, DIMS[dataset])}
    finally:
        bar.close()
    return out


def _wanted(dataset: str, pde: Any, pert: Any, split_seed: int, train_res: int, test_res: int) -> dict:
    shifted = bool(pert.viscosity_shift or pert.coefficient_shift)
    counts = {"train": pde.n_train, "val": pde.n_val, "test": pde.n_test}
    wanted = {}
    for split, n in counts.items():
        res = test_res if split == "test" else train_res
        phys = _physics(dataset, pde, shifted and split == "test")
        wanted[split] = {"dataset": dataset, "split": split, "n": n, "seed": split_seed, "resolution": res, **phys}
    if shifted or train_res != test_res:
        wanted["test_clean"] = {**wanted["test"], "resolution": train_res, **_physics(dataset, pde, False)}
    return wanted


def load_operator(dataset: str, pde: Any, pert: Any, *, split_seed: int = 0) -> OperatorSplits:
    """The run's splits (see the module doc); generation happens only on a cache miss."""
    dim = DIMS[dataset]
    test_res = pde.resolution or DEFAULT_RESOLUTION[dataset]
    train_res = (pde.shift_resolution or SHIFT_RESOLUTION[dataset]) if pert.resolution_shift else test_res
    wanted = _wanted(dataset, pde, pert, split_seed, train_res, test_res)
    t0 = time.perf_counter()
    folder = cache.cache_dir(pde.cache_dir)
    candidates = [DEFAULT_RESOLUTION[dataset], test_res, train_res]
    arrays, hits = cache.cached(folder, wanted, lambda names: _generate(dataset, wanted, names, folder, candidates))
    elapsed = time.perf_counter() - t0
    tr = arrays["train"]
    scale = {"x_mean": float(tr["x"].mean()), "x_std": float(tr["x"].std()) or 1.0,
             "y_mean": float(tr["y"].mean()), "y_std": float(tr["y"].std()) or 1.0}

    def split(name: str, key: str | None = None) -> Split:
        a = arrays[key or name]
        x = (torch.from_numpy(a["x"]).float() - scale["x_mean"]) / scale["x_std"]
        y = (torch.from_numpy(a["y"]).float() - scale["y_mean"]) / scale["y_std"]
        return Split(name, x, y)

    extra = {"test_clean": split("test_clean")} if "test_clean" in arrays else {}
    info = {"cache": {k: v["key"] for k, v in hits.items()}, "cache_hit": all(v["hit"] for v in hits.values()),
            "cache_dir": str(cache.cache_dir(pde.cache_dir)), "load_s": round(elapsed, 3),
            "generator": {k: v for k, v in wanted["train"].items() if k not in ("split", "n", "resolution")}}
    return OperatorSplits(dataset, split("train"), split("val"), split("test"), 0, tuple(tr["x"].shape[1:]),
                          extra, info, dim=dim, resolution=train_res, scale=scale,
                          periodic=dataset not in NODE_GRIDS)
