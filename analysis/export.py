"""The tidy scalar table and metric histories as files, for people who post-process elsewhere.

``summary.csv`` / ``summary.parquet`` is :func:`analysis.query.runs_frame` as is: one row
per task run (every status; the ``status`` column says which), the fixed leading columns,
then tags, ``params.*`` and ``final.* / best.* / step.*`` per metric, each block sorted, so
two exports of the same store have the same schema. ``--curves`` adds the histories in
long format (``curves.csv``) and as parallel arrays (``curves.npz``).

``--schema FILE`` gives a study its own result schema instead: a YAML mapping
``columns: {output name: source column}`` (a task ships one, e.g.
``projects/mutual/export.yaml``), so the CSV has exactly the columns the study's plan names,
in that order, one row per run.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from analysis import query
from tracking.config import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

FORMATS = ("csv", "parquet")


def apply_schema(frame: "pd.DataFrame", schema: str | Path) -> "pd.DataFrame":
    """The frame's columns renamed and ordered as the schema file says; a source column that
    does not exist is a one-line error naming the closest ones."""
    import difflib

    from tracking.config import read_yaml

    doc = read_yaml(Path(schema), "export schema", "pass a YAML file with a 'columns' mapping")
    columns = doc.get("columns")
    if not isinstance(columns, dict) or not columns:
        raise ConfigError(f"export schema {str(schema)!r} needs a non-empty 'columns' mapping of "
                          f"output name -> source column (e.g. seed: tags.labrun.seed)")
    out = {}
    for name, source in columns.items():
        if source not in frame.columns:
            close = difflib.get_close_matches(str(source), list(frame.columns), n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(close)}?" if close else "see `labrun export` without --schema"
            raise ConfigError(f"export schema {str(schema)!r}: column {name!r} reads {source!r}, which "
                              f"these runs do not have; {hint}")
        out[str(name)] = frame[source]
    import pandas as pd

    return pd.DataFrame(out)


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _neutralised(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _is_number(value):
        return "'" + value
    return value


def neutralise_formulas(table: "pd.DataFrame") -> "pd.DataFrame":
    """Text a spreadsheet would evaluate (``=HYPERLINK(...)``, ``+cmd``, ``@SUM``) gets a
    leading apostrophe: descriptions, tags and names are typed by users, on a shared server by
    other users, and opening an export must not run them. Numbers, and text that reads as
    one (``-0.1``, ``-inf``), are left as they are."""
    text = [c for c in table.columns if table[c].dtype == object]
    if not text:
        return table
    table = table.copy()
    for col in text:
        table[col] = table[col].map(_neutralised)
    return table


def _without_empty(table: "pd.DataFrame") -> "pd.DataFrame":
    """The columns some exported run has a value in: a param only excluded runs had, or a tag
    only the analysis runs carry, would be an empty column in every row."""
    keep = (table.notna() & table.astype(str).ne("")).any(axis=0)
    for col in keep.index[~keep]:
        if col.startswith(("final.", "best.")):  # logged, as NaN: the step says so
            step = table.get("step." + col.split(".", 1)[1])
            keep[col] = step is not None and bool(step.notna().any())
    return table.loc[:, keep]


def _logged_nan(table: "pd.DataFrame") -> "pd.DataFrame":
    """A metric a run logged as NaN reads ``nan``; one it never logged stays empty."""
    out = table
    for col in [c for c in table.columns if c.startswith(("final.", "best."))]:
        step = table.get("step." + col.split(".", 1)[1])
        if step is None:
            continue
        logged_nan = table[col].isna() & step.notna()
        if logged_nan.any():
            out = out.copy() if out is table else out
            out[col] = out[col].astype(object).mask(logged_nan, "nan")
    return out


def _writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".labrun-export-probe"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"cannot write the export to {out}: {exc.strerror or exc}; choose a writable "
                          f"folder with --out") from None


def export(experiments: Sequence[str], out_dir: str | Path, *, fmt: str = "csv", curves: bool = False,
           metrics: Sequence[str] | None = None, filters: Sequence[str] = (),
           tracking_uri: str | None = None, schema: str | Path | None = None,
           keep_empty: bool = False) -> list[Path]:
    """Write the files; returns their paths. Raises ConfigError for an empty selection or an
    output folder that cannot be written (checked before anything is read)."""
    import numpy as np

    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError("--format parquet needs pyarrow (pip install pyarrow); or use --format csv") from None
    out = Path(out_dir)
    _writable(out)
    frame = query.runs_frame(list(experiments), filter=list(filters) or None, tracking_uri=tracking_uri)
    if frame.empty:
        raise ConfigError(f"experiment {', '.join(experiments)} has no task runs to export"
                          + (" matching the filters" if filters else ""))
    logged = sorted(c[len("final."):] for c in frame.columns if c.startswith("final."))
    if metrics:
        unknown = [m for m in metrics if m not in logged]
        if unknown:
            raise ConfigError(f"metric {unknown[0]!r} was not logged by these runs; logged: {', '.join(logged[:12])}")
    table = apply_schema(frame, schema) if schema else (frame if keep_empty else _without_empty(frame))
    written: list[Path] = []
    if fmt == "csv":
        path = out / "summary.csv"
        neutralise_formulas(_logged_nan(table)).to_csv(path, index=False)
    else:
        path = out / "summary.parquet"
        table = table.copy()
        for col in table.columns:
            if table[col].dtype == object:
                table[col] = table[col].astype("string")
        table.to_parquet(path, index=False)
    written.append(path)
    if curves:
        hist = query.curves_frame(frame["run_id"], list(metrics or logged), tracking_uri=tracking_uri)
        csv_path = out / "curves.csv"
        neutralise_formulas(hist).to_csv(csv_path, index=False)
        npz_path = out / "curves.npz"
        np.savez_compressed(npz_path, run_id=hist["run_id"].to_numpy(dtype=str),
                            metric=hist["metric"].to_numpy(dtype=str), step=hist["step"].to_numpy(),
                            value=hist["value"].to_numpy(), timestamp=hist["timestamp"].to_numpy())
        written += [csv_path, npz_path]
    return written
