"""Raw series by dataset name: a ``(T, C)`` float array, its column names and its season.

Every source is local: statsmodels reads the CSV files inside its wheel, ``csv`` reads
``data.path``. A path, column or value that cannot be used is a one-line :class:`DataError`
that names the key to change.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from projects.mutual.data import DataError

SEASONS = {"co2": 52, "sunspots": 11, "elnino": 12, "macrodata": 4, "csv": 24}
"""Default season of the seasonal-naive floor (synthetic_series: its generator's period)."""


@dataclass
class RawSeries:
    values: np.ndarray
    """(T, C) float64, no missing values."""
    columns: list[str]
    period: int
    info: dict[str, Any] = field(default_factory=dict)


def _statsmodels(name: str) -> RawSeries:
    import statsmodels.datasets as smd

    frame = getattr(smd, name).load_pandas().data
    if name == "co2":
        filled = int(frame["co2"].isna().sum())
        frame = frame.interpolate(method="linear", limit_direction="both")
        return RawSeries(frame[["co2"]].to_numpy(float), ["co2"], SEASONS[name],
                         {"interpolated_steps": filled})
    if name == "sunspots":
        return RawSeries(frame[["SUNACTIVITY"]].to_numpy(float), ["SUNACTIVITY"], SEASONS[name])
    if name == "elnino":
        months = frame.drop(columns="YEAR").to_numpy(float).reshape(-1, 1)
        return RawSeries(months, ["nino3_sst"], SEASONS[name])
    cols = [c for c in frame.columns if c not in ("year", "quarter")]
    return RawSeries(frame[cols].to_numpy(float), cols, SEASONS[name])


def _csv(path: str | None, date_column: str | None) -> RawSeries:
    if not path:
        raise DataError("data.dataset=csv needs data.path: a CSV with a date column and numeric channels "
                        "(ETT layout: date,HUFL,HULL,...,OT); set --set data.path=/path/to/ETTh1.csv")
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"data.path={path} is not a file: point data.path at a CSV with a date column and "
                        f"numeric channels (ETT layout: date,HUFL,HULL,...,OT)")
    import pandas as pd

    try:
        frame = pd.read_csv(file)
    except Exception as exc:  # noqa: BLE001  (any parse error: one line)
        raise DataError(f"data.path={path} cannot be read as CSV ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}); expected date,<channel>,...") from None
    if date_column is not None:
        if date_column not in frame.columns:
            raise DataError(f"series.date_column={date_column} is not a column of {path} (columns: "
                            f"{', '.join(map(str, frame.columns[:12]))}); set series.date_column to one of them, "
                            f"or to null when the CSV has no date column")
        frame = frame.drop(columns=date_column)
    bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad or frame.shape[1] == 0:
        raise DataError(f"{path}: columns {', '.join(map(str, bad)) or '(none)'} are not numeric; every column "
                        f"but series.date_column must be a numeric channel")
    gaps = int(frame.isna().sum().sum())
    frame = frame.interpolate(method="linear", limit_direction="both")
    return RawSeries(frame.to_numpy(float), [str(c) for c in frame.columns], SEASONS["csv"],
                     {"path": str(file), "interpolated_values": gaps})


def _synthetic(cfg: Any, split_seed: int) -> RawSeries:
    from projects.mutual.data.base import derived_rng
    from projects.mutual.data.series.synthetic import generate

    s = cfg.synthetic
    seed = split_seed if s.seed is None else s.seed
    out = generate(derived_rng(seed, "series/synthetic"), length=s.length, channels=s.channels,
                   period=s.period, trend=s.trend, noise=s.noise, ar=s.ar, change_points=list(s.change_points),
                   regime_level=s.regime_level, regime_scale=s.regime_scale)
    return RawSeries(out.values, [f"ch{c}" for c in range(s.channels)], out.period,
                     {"change_steps": out.change_steps, "generator_seed": seed})


def load_raw(dataset: str, cfg: Any, *, path: str | None = None, split_seed: int = 0) -> RawSeries:
    """The whole series of ``dataset`` (``cfg`` is the ``series`` section)."""
    if dataset == "synthetic_series":
        return _synthetic(cfg, split_seed)
    if dataset == "csv":
        return _csv(path, cfg.date_column)
    return _statsmodels(dataset)


def select(raw: RawSeries, features: str, target: str | None) -> tuple[np.ndarray, list[str], list[int]]:
    """Input channels, their names and the indices (into them) of the forecast channels."""
    if target is None:
        target = raw.columns[-1]
    if target not in raw.columns:
        raise DataError(f"series.target={target} is not a column of the series (columns: "
                        f"{', '.join(raw.columns[:12])}); set series.target to one of them")
    t = raw.columns.index(target)
    if features == "S":
        return raw.values[:, [t]], [target], [0]
    outputs = [t] if features == "MS" else list(range(len(raw.columns)))
    return raw.values, list(raw.columns), outputs
