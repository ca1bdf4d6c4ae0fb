"""The tidy scalar table and metric histories as files, for people who post-process elsewhere.

``summary.csv`` / ``summary.parquet`` is :func:`analysis.query.runs_frame` as is: one row
per task run (every status; the ``status`` column says which), the fixed leading columns,
then tags, ``params.*`` and ``final.* / best.* / step.*`` per metric, each block sorted, so
two exports of the same store have the same schema. ``--curves`` adds the histories in
long format (``curves.csv``) and as parallel arrays (``curves.npz``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from analysis import query
from tracking.config import ConfigError

FORMATS = ("csv", "parquet")


def export(experiments: Sequence[str], out_dir: str | Path, *, fmt: str = "csv", curves: bool = False,
           metrics: Sequence[str] | None = None, filters: Sequence[str] = (),
           tracking_uri: str | None = None) -> list[Path]:
    """Write the files; returns their paths. Raises ConfigError for an empty selection."""
    import numpy as np

    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError("--format parquet needs pyarrow (pip install pyarrow); or use --format csv") from None
    frame = query.runs_frame(list(experiments), filter=list(filters) or None, tracking_uri=tracking_uri)
    if frame.empty:
        raise ConfigError(f"experiment {', '.join(experiments)} has no task runs to export"
                          + (" matching the filters" if filters else ""))
    logged = sorted(c[len("final."):] for c in frame.columns if c.startswith("final."))
    if metrics:
        unknown = [m for m in metrics if m not in logged]
        if unknown:
            raise ConfigError(f"metric {unknown[0]!r} was not logged by these runs; logged: {', '.join(logged[:12])}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if fmt == "csv":
        path = out / "summary.csv"
        frame.to_csv(path, index=False)
    else:
        path = out / "summary.parquet"
        table = frame.copy()
        for col in table.columns:
            if table[col].dtype == object:
                table[col] = table[col].astype("string")
        table.to_parquet(path, index=False)
    written.append(path)
    if curves:
        hist = query.curves_frame(frame["run_id"], list(metrics or logged), tracking_uri=tracking_uri)
        csv_path = out / "curves.csv"
        hist.to_csv(csv_path, index=False)
        npz_path = out / "curves.npz"
        np.savez_compressed(npz_path, run_id=hist["run_id"].to_numpy(dtype=str),
                            metric=hist["metric"].to_numpy(dtype=str), step=hist["step"].to_numpy(),
                            value=hist["value"].to_numpy(), timestamp=hist["timestamp"].to_numpy())
        written += [csv_path, npz_path]
    return written
