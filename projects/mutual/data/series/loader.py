"""The forecasting splits of one run: cut along time, standardised on train, windowed, with
the run's condition applied.

* layout (:mod:`.schema`): train | val | near test | gap | far test. A window's targets lie
  inside its split; its inputs may reach back into the part before (the usual ETT protocol),
  except that training inputs never leave the training part;
* each channel is standardised with the mean and std of the *training part only*
  (``SeriesSplits.scale``); models, losses and metrics are in these units;
* ``temporal_shift``: test = the far part, ``test_clean`` = the near part;
* ``missing_random<NN>`` / ``missing_block<NN>``: NN % of the input values (random: single
  values; block: runs of ``series.block_length`` steps, all channels) of the test split
  (``series.missing_in=all``: of every split) are dropped and imputed by carrying the last
  observation forward (before any observation: 0, the training mean); targets stay observed;
  ``test_clean`` is the same windows with the observed inputs;
* ``horizon_shift``: the test targets are ``series.test_horizon`` long; ``test_clean`` is at
  ``series.horizon``.

Masks and the synthetic series come from ``data.split_seed``: a resumed run rebuilds them
exactly, and every run seed and method sees the same windows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from projects.mutual.data import DataError
from projects.mutual.data.base import DataSplits, Split, derived_rng
from projects.mutual.data.series.sources import load_raw, select


@dataclass
class SeriesSplits(DataSplits):
    """:class:`DataSplits` of windows: ``x`` (N, lookback, C_in), ``y`` (N, horizon, C_out)."""

    lookback: int = 0
    horizon: int = 0
    outputs: tuple[int, ...] = ()
    """Indices of the forecast channels among the input channels."""
    period: int = 0
    scale: dict[str, list[float]] = field(default_factory=dict)
    floors: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    """split -> naive | seasonal_naive -> mse, mae (standardised units, the models' metrics)."""

    def describe(self) -> dict[str, Any]:
        splits = {"train": self.train, **self.eval_splits()}
        out = {"dataset": self.name, "lookback": self.lookback, "horizon": self.horizon, "period": self.period,
               "horizons": {k: int(v.y.shape[1]) for k, v in splits.items()},
               "channels_in": int(self.input_shape[1]), "channels_out": len(self.outputs)}
        out.update({f"n_{k}": len(v) for k, v in splits.items()})
        out.update({"scale": self.scale, "floors": self.floors, **self.info})
        return out


def layout(length: int, cfg: Any) -> dict[str, tuple[int, int]]:
    """[start, end) of each part of the series (see :mod:`.schema`)."""
    n_tr, n_va, n_te = (int(length * f) for f in (cfg.train_fraction, cfg.val_fraction, cfg.test_fraction))
    return {"train": (0, n_tr), "val": (n_tr, n_tr + n_va), "near": (n_tr + n_va, n_tr + n_va + n_te),
            "far": (length - n_te, length)}


def missing_mask(rng: np.random.Generator, shape: tuple[int, int], *, random: float, block: float,
                 block_length: int) -> np.ndarray:
    """True where a value is dropped: ``random`` of the values one by one, and runs of
    ``block_length`` steps (every channel) until exactly ``block`` of the steps are covered."""
    n, c = shape
    mask = rng.random((n, c)) < random if random else np.zeros((n, c), bool)
    if block:
        steps, want = np.zeros(n, bool), int(round(block * n))
        length = min(block_length, n)
        while (deficit := want - int(steps.sum())) > 0:  # the last block is cut to hit the share exactly
            start = int(rng.integers(0, n - length + 1))
            free = np.flatnonzero(~steps[start:start + length])[:deficit]
            steps[start + free] = True
        mask |= steps[:, None]
    return mask


def impute(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Last observation carried forward along time, per channel; 0 before any observation."""
    t = np.arange(len(values))[:, None]
    last = np.maximum.accumulate(np.where(mask, -1, t), axis=0)
    out = values[np.clip(last, 0, None), np.arange(values.shape[1])[None, :]]
    return np.where(last < 0, 0.0, out)


def _windows(x: torch.Tensor, y: torch.Tensor, span: tuple[int, int], lookback: int, horizon: int,
             stride: int, name: str) -> Split:
    """Windows whose targets start at t in [max(start, lookback), end - horizon], as views."""
    first, last = max(span[0], lookback), span[1] - horizon
    if last < first:
        raise DataError(f"series too short for {name}: its part [{span[0]}, {span[1]}) holds no window of "
                        f"lookback {lookback} + horizon {horizon}; lower series.lookback/horizon or enlarge "
                        f"series.{'train' if name == 'train' else 'test' if 'test' in name else 'val'}_fraction")
    xs = x.unfold(0, lookback, 1)[first - lookback:last - lookback + 1:stride].transpose(1, 2)
    ys = y.unfold(0, horizon, 1)[first:last + 1:stride].transpose(1, 2)
    return Split(name, xs, ys)


def floors(split: Split, outputs: list[int], period: int) -> dict[str, dict[str, float]]:
    """Naive (last value) and seasonal-naive (the last season repeated) forecasts' MSE and MAE."""
    x, y = split.x[:, :, outputs], split.y
    lookback, horizon = x.shape[1], y.shape[1]
    preds = {"naive": x[:, -1:, :].expand(-1, horizon, -1)}
    if period <= lookback:
        idx = torch.tensor([lookback - period + (h % period) for h in range(horizon)])
        preds["seasonal_naive"] = x[:, idx, :]
    return {k: {"mse": float((p - y).pow(2).mean()), "mae": float((p - y).abs().mean())} for k, p in preds.items()}


def load_series(dataset: str, cfg: Any, pert: Any, *, path: str | None = None, split_seed: int = 0) -> SeriesSplits:
    """The run's splits (see the module doc); ``cfg`` is the ``series`` section."""
    raw = load_raw(dataset, cfg, path=path, split_seed=split_seed)
    values, columns, outputs = select(raw, cfg.features, cfg.target)
    parts = layout(len(values), cfg)
    tr = values[slice(*parts["train"])]
    mean, std = tr.mean(0), tr.std(0)
    std = np.where(std > 0, std, 1.0)
    clean = (values - mean) / std
    rate_r, rate_b = pert.missing_random, pert.missing_block
    observed = clean
    if rate_r or rate_b:
        test_span = parts["far" if pert.temporal_shift else "near"]
        lo = 0 if cfg.missing_in == "all" else max(0, test_span[0] - cfg.lookback)
        hi = len(values) if cfg.missing_in == "all" else test_span[1]
        mask = np.zeros(clean.shape, bool)
        mask[lo:hi] = missing_mask(derived_rng(split_seed, "series/missing"), (hi - lo, clean.shape[1]),
                                   random=rate_r, block=rate_b, block_length=cfg.block_length)
        observed = impute(clean, mask)
    x_obs, x_clean = torch.from_numpy(observed).float(), torch.from_numpy(clean).float()
    y = x_clean[:, outputs]
    L, H = cfg.lookback, cfg.horizon
    train_x = x_obs if cfg.missing_in == "all" else x_clean
    train = _windows(train_x, y, parts["train"], L, H, cfg.stride, "train")
    val = _windows(train_x, y, (parts["val"][0], parts["val"][1]), L, H, 1, "val")
    test_h = cfg.test_horizon if pert.horizon_shift else H
    test = _windows(x_obs, y, parts["far" if pert.temporal_shift else "near"], L, test_h, 1, "test")
    shifted = pert.temporal_shift or pert.horizon_shift or rate_r or rate_b
    extra = {"test_clean": _windows(x_clean, y, parts["near"], L, H, 1, "test_clean")} if shifted else {}
    period = cfg.period or raw.period
    evals = {"val": val, "test": test, **extra}
    info = {"columns": columns, "targets": [columns[i] for i in outputs], "layout": parts,
            "gap_steps": parts["far"][0] - parts["near"][1], "steps": len(values), **raw.info}
    if rate_r or rate_b:
        info["missing"] = {"random": rate_r, "block": rate_b, "in": cfg.missing_in,
                           "dropped_share": float(mask[lo:hi].mean()),
                           "imputation": "last observation carried forward; 0 (training mean) before any"}
    return SeriesSplits(dataset, train, val, test, 0, (L, values.shape[1]), extra, info, lookback=L, horizon=H,
                        outputs=tuple(outputs), period=period,
                        scale={"mean": mean.tolist(), "std": std.tolist()},
                        floors={k: floors(v, outputs, period) for k, v in evals.items()})
