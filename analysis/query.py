"""Tracking store -> one tidy pandas DataFrame (one row per run), and metric histories.

``mlflow.search_runs`` builds a full ``Run`` entity (every tag, param and metric, through
ORM objects) for each run, which costs ~1 ms a run on SQLite: 10,000 runs take seconds.
When the tracking URI is a database (SQLite, PostgreSQL, MySQL) the same information is
read here with five bulk SQL statements against MLflow's own tables (``runs``, ``tags``,
``params``, ``latest_metrics``, ``metrics``); through ``labrun server`` the server runs those
statements on its store and answers one request with the tables as Arrow
(:mod:`tracking.backends.bulk`); through any other tracking server (http/https) the REST
``search_runs`` pages are walked to the end (one log line says so). All paths feed one
assembler, so they give the same frame (the tests check that).

Columns of the frame (a stable schema; ``export`` writes it as is):

- ``run_id, experiment_id, experiment, run_name, status, start_time, end_time,
  duration_s, parent_run_id, description``
- every ``labrun.*`` and ``optuna.*`` tag under its own key (``labrun.method`` ...),
  ``labrun.seed`` as an integer
- ``params.<dotted key>``; numeric-looking params become numbers, so the ``1e-3`` that
  ``mlflow run -P`` logs equals the ``0.001`` labrun logs
- per metric ``M``: ``final.M`` (value at the last step), ``best.M`` (min or max over the
  history, by the metric's direction) and ``step.M`` (the last step)
"""
from __future__ import annotations

import math
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from tracking import backends
from tracking import tags as T
from tracking.config import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

BASE_COLUMNS = ["run_id", "experiment_id", "experiment", "run_name", "status", "start_time",
                "end_time", "duration_s", "parent_run_id"]
TAG_PREFIXES = ("",)               # every tag is a column (a task's own, a user's --tag) ...
EXCLUDED_TAG_PREFIXES = ("mlflow.",)  # ... but MLflow's bookkeeping (source, user, log-model history)
VOLATILE_TAGS = T.VOLATILE        # they change while a run lives: no column would mean anything
PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"  # the run's description (--description, the UI's note)
PARENT_KINDS = ("sweep", "study")   # values of labrun.kind that sweeps/ gives its parent runs
SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mssql")
PAGE_SIZE = 1000
_NUMBER = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")
_INTEGER = re.compile(r"^\s*[+-]?\d+\s*$")


@dataclass
class RawRuns:
    """What either backend reads: long tables before pivoting (kept plain for speed)."""

    runs: list[tuple] = field(default_factory=list)      # run_id, exp_id, name, status, start, end
    tags: list[tuple] = field(default_factory=list)      # run_id, key, value
    params: list[tuple] = field(default_factory=list)    # run_id, key, value
    latest: list[tuple] = field(default_factory=list)    # run_id, key, value, step, is_nan
    extrema: list[tuple] = field(default_factory=list)   # run_id, key, min, max


# ----------------------------------------------------------------------------- backends

def backend_for(uri: str) -> str:
    """'sql' for a database URI, 'bulk' for a tracking server (labrun server's endpoint, else
    the REST API), 'search' (the store API) for anything else."""
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    return "sql" if scheme in SQL_SCHEMES else "bulk" if scheme in ("http", "https") else "search"


def _client(uri: str | None):
    from tracking.store import client, quiet_environment, tracking_uri

    quiet_environment()
    uri = uri or tracking_uri()
    if uri.startswith("sqlite:///") and ":memory:" not in uri:
        import os

        path = uri[len("sqlite:///"):].split("?", 1)[0]
        if not os.path.exists(path):   # reading must not create an empty store as a side effect
            raise ConfigError(f"no tracking store at {uri} (set MLFLOW_TRACKING_URI or run where mlflow.db is)")
    if uri == tracking_uri():
        return client(), uri
    from mlflow.tracking import MlflowClient

    from tracking.store import check_reachable

    check_reachable(uri)

    return MlflowClient(tracking_uri=uri), uri


def resolve_experiments(client: Any, experiments: str | Sequence[str]) -> dict[str, str]:
    """Experiment names (or ids) -> {id: name}; an unknown one is a one-line ConfigError."""
    names = [experiments] if isinstance(experiments, str) else list(experiments)
    if not names:
        raise ConfigError("no experiment given: pass --experiment NAME")
    found: dict[str, str] = {}
    for name in names:
        exp = _by_name(client, name)
        if exp is None and str(name).isdigit():
            try:
                exp = client.get_experiment(str(name))
            except Exception:
                exp = None
        if exp is None or exp.lifecycle_stage != "active":
            known = sorted(e.name for e in client.search_experiments())
            import difflib

            close = difflib.get_close_matches(str(name), known, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known[:10]) or 'none'}"
            raise ConfigError(f"no experiment named {name!r} in the tracking store; {hint}")
        found[exp.experiment_id] = exp.name
    return found


def _by_name(client: Any, name: str) -> Any:
    """``get_experiment_by_name``; a server's 403 is a one-line ConfigError naming the experiment."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_experiment_by_name(name)
    except MlflowException as exc:
        if exc.get_http_status_code() != 403:
            raise
        raise ConfigError(f"the tracking server says this user may not READ experiment {name!r} (HTTP 403): "
                          f"ask its admin for READ permission on it") from None


def _tag_column(key: str) -> bool:
    return key.startswith(TAG_PREFIXES) and not key.startswith(EXCLUDED_TAG_PREFIXES)


def _read_sql(uri: str, exp_ids: Sequence[str], metrics: Sequence[str] | None) -> RawRuns | None:
    """Five bulk statements on MLflow's tables, each joined to ``runs`` on the experiment ids.

    The SQL lives in ``tracking.backends.read_runs`` (the one module that knows MLflow's
    schema); None when it turns the fast path off (MLflow version or schema differs,
    ``LABRUN_PUBLIC_API_ONLY``): the caller then walks ``search_runs``.
    """
    tables = backends.read_runs(uri, exp_ids, metrics, tag_prefixes=TAG_PREFIXES, tag_keys=(PARENT_TAG, NOTE_TAG),
                                exclude_prefixes=EXCLUDED_TAG_PREFIXES,
                                skip_tags=VOLATILE_TAGS)
    return None if tables is None else RawRuns(**tables)


def _read_bulk(uri: str, exp_names: Mapping[str, str], metrics: Sequence[str] | None) -> RawRuns | None:
    """The same tables from ``labrun server``'s bulk endpoint, one request; None when the
    server has none (a plain ``mlflow server``, logged once): the caller walks ``search_runs``."""
    from tracking.backends import bulk

    label = "experiment " + ", ".join(repr(n) for n in exp_names.values())
    tables = bulk.read_runs(uri, list(exp_names), metrics, tag_prefixes=TAG_PREFIXES,
                            tag_keys=(PARENT_TAG, NOTE_TAG), exclude_prefixes=EXCLUDED_TAG_PREFIXES,
                            skip_tags=VOLATILE_TAGS, label=label)
    return None if tables is None else RawRuns(**tables)


def _read_search(client: Any, exp_ids: Sequence[str], metrics: Sequence[str] | None) -> RawRuns:
    """Every page of ``search_runs`` (not just the first 1,000), then histories for best."""
    from mlflow.entities import ViewType

    raw = RawRuns()
    token = None
    while True:
        page = client.search_runs(list(exp_ids), filter_string="", run_view_type=ViewType.ACTIVE_ONLY,
                                  max_results=PAGE_SIZE, page_token=token)
        for run in page:
            info, data = run.info, run.data
            rid = info.run_id
            raw.runs.append((rid, info.experiment_id, info.run_name, info.status, info.start_time,
                             info.end_time))
            raw.tags.extend((rid, k, v) for k, v in data.tags.items()
                            if (_tag_column(k) or k in (PARENT_TAG, NOTE_TAG)) and k not in VOLATILE_TAGS)
            raw.params.extend((rid, k, v) for k, v in data.params.items())
            raw.latest.extend((rid, k, v, step, False) for k, v, step in backends.latest_metrics(client, run))
        token = page.token
        if not token:
            break
    wanted = [(r[0], r[1]) for r in raw.latest if metrics is None or r[1] in metrics]

    def extrema(item: tuple[str, str]) -> tuple | None:
        values = [m.value for m in client.get_metric_history(*item) if not math.isnan(m.value)]
        return (item[0], item[1], min(values), max(values)) if values else None

    with ThreadPoolExecutor(max_workers=8) as pool:
        raw.extrema = [e for e in pool.map(extrema, wanted) if e is not None]
    return raw


# ----------------------------------------------------------------------------- assembly

def _numeric(series: "pd.Series") -> "pd.Series":
    """The column as numbers when every value reads as a finite number, else unchanged.

    Checked on the distinct values (a param has few), so 10,000 runs cost no more than 10.
    """
    import pandas as pd

    present = series.dropna()
    if present.empty:
        return series
    parsed: dict[Any, float] = {}
    integral = True
    for text in present.unique():
        t = str(text)
        if not _NUMBER.match(t):
            return series
        v = float(t)
        if not math.isfinite(v):
            return series
        parsed[text] = v
        integral = integral and bool(_INTEGER.match(t))
    values = series.map(parsed)
    if integral:
        return values.astype("Int64") if values.isna().any() else values.astype("int64")
    return values.astype("float64")


def _pivot(rows: list[tuple], index: "pd.Index", width: int, dtype: str) -> dict[str, list]:
    """Long ``(run_id, key, v1, v2, ...)`` rows -> {key: [column of v1, column of v2, ...]}.

    A direct numpy scatter instead of ``DataFrame.pivot`` (several times faster at 10k runs);
    a repeated (run, key) keeps the last row, as ``drop_duplicates(keep="last")`` would.
    """
    import numpy as np
    import pandas as pd

    if not rows:
        return {}
    table = np.array(rows, dtype=object)                  # C-level transpose of the tuples
    cols = [table[:, j] for j in range(table.shape[1])]
    ri = index.get_indexer(pd.Index(cols[0]))
    codes, keys = pd.factorize(cols[1], sort=True)
    keep = ri >= 0
    out: dict[str, list] = {str(k): [] for k in keys}
    arrays = []
    for j in range(width):
        arr = np.full((len(index), len(keys)), np.nan if dtype == "float" else None,
                      dtype="float64" if dtype == "float" else object)
        vals = np.asarray(cols[2 + j], dtype="float64" if dtype == "float" else object)
        arr[ri[keep], codes[keep]] = vals[keep]
        arrays.append(arr)
    for k_i, k in enumerate(keys):
        out[str(k)] = [a[:, k_i] for a in arrays]
    return out


def _infinite(values: "pd.Series") -> "pd.Series":
    """MLflow's SQL store keeps ±inf as ±the largest float: give analysis (and exports) the inf back."""
    import sys

    big = sys.float_info.max
    return values.mask(values >= big, math.inf).mask(values <= -big, -math.inf)


def _assemble(raw: RawRuns, exp_names: Mapping[str, str],
              directions: Mapping[str, str] | None) -> "pd.DataFrame":
    import numpy as np
    import pandas as pd

    from tracking.metrics import default_direction

    base = pd.DataFrame.from_records(raw.runs, columns=["run_id", "experiment_id", "run_name", "status",
                                                        "start_time", "end_time"])
    base["experiment_id"] = base["experiment_id"].astype(str)
    base["experiment"] = base["experiment_id"].map(dict(exp_names)).astype(object)
    for col in ("start_time", "end_time"):
        base[col] = pd.to_datetime(pd.to_numeric(base[col], errors="coerce"), unit="ms", utc=True)
    base["duration_s"] = (base["end_time"] - base["start_time"]).dt.total_seconds()
    base = base.sort_values(["start_time", "run_id"], kind="stable").reset_index(drop=True)
    index = pd.Index(base["run_id"])
    columns: dict[str, Any] = {c: base[c] for c in BASE_COLUMNS if c in base.columns}

    tags = _pivot(raw.tags, index, 1, "object")
    parent = tags.pop(PARENT_TAG, [np.full(len(index), None, dtype=object)])[0]
    columns["parent_run_id"] = pd.Series(parent, dtype=object)
    note = tags.pop(NOTE_TAG, [np.full(len(index), None, dtype=object)])[0]
    columns["description"] = pd.Series(note, dtype=object)
    for key in sorted(tags):
        col = pd.Series(tags[key][0], dtype=object)
        columns[key] = _numeric(col) if key == T.SEED else col
    params = _pivot(raw.params, index, 1, "object")
    for key in sorted(params):
        columns[f"params.{key}"] = _numeric(pd.Series(params[key][0], dtype=object))

    latest = _pivot([(r[0], r[1], np.nan if r[4] else r[2], r[3]) for r in raw.latest]
                    if any(r[4] for r in raw.latest) else [r[:4] for r in raw.latest], index, 2, "float")
    extrema = _pivot(raw.extrema, index, 2, "float")
    for name in sorted(latest):
        direction = (directions or {}).get(name) or default_direction(name)
        value, step = latest[name]
        columns[f"final.{name}"] = _infinite(pd.Series(value, dtype="float64"))
        lo_hi = extrema.get(name)
        best = lo_hi[1 if direction == "max" else 0] if lo_hi else np.full(len(index), np.nan)
        columns[f"best.{name}"] = _infinite(pd.Series(best, dtype="float64"))
        columns[f"step.{name}"] = pd.Series(step).astype("Int64")
    return pd.DataFrame(columns)


# ----------------------------------------------------------------------------- public API

def runs_frame(experiments: str | Sequence[str], filter: str | Sequence[str] | None = None,
               metrics: Sequence[str] | None = None, *, tracking_uri: str | None = None,
               directions: Mapping[str, str] | None = None, backend: str = "auto",
               task_runs_only: bool = True) -> "pd.DataFrame":
    """All runs of the experiments as one tidy frame (see the module docstring for columns).

    ``metrics`` limits which histories are scanned for ``best.*`` (final values of every
    metric are always there). ``task_runs_only`` drops what is not a task run: analysis
    runs, sweep/study parents and runs without ``labrun.task``. ``filter`` takes
    :func:`apply_filters` expressions. ``backend``: 'auto' | 'sql' | 'bulk' | 'search'.
    """
    client, uri = _client(tracking_uri)
    exp_names = resolve_experiments(client, experiments)
    chosen = backend_for(uri) if backend == "auto" else backend
    if chosen == "sql":
        if backend_for(uri) != "sql":
            raise ConfigError(f"backend 'sql' needs a database tracking URI, not {uri!r}")
        raw = _read_sql(uri, list(exp_names), metrics)
        if raw is None:  # the SQL fast path is off (logged once): the public API gives the same frame
            raw = _read_search(client, list(exp_names), metrics)
    elif chosen == "bulk":
        raw = _read_bulk(uri, exp_names, metrics)
        if raw is None:  # not a labrun server (logged once): the REST API gives the same frame
            raw = _read_search(client, list(exp_names), metrics)
    elif chosen == "search":
        raw = _read_search(client, list(exp_names), metrics)
    else:
        raise ConfigError(f"unknown backend {backend!r}: use auto, sql, bulk or search")
    frame = _assemble(raw, exp_names, directions)
    if task_runs_only:
        frame = task_runs(frame)
    if filter:
        frame = apply_filters(frame, [filter] if isinstance(filter, str) else list(filter))
    return frame


def task_runs(frame: "pd.DataFrame") -> "pd.DataFrame":
    """Drop analysis runs, sweep/study parent runs and runs that no task made.

    An experiment where no run carries ``labrun.task`` (an MLflow project labrun never ran)
    keeps all its runs but parents: labrun's tags help, they are not required.
    """
    if T.TASK in frame.columns and frame[T.TASK].notna().any():
        keep = frame[T.TASK].notna()
    else:
        parents = set(frame["parent_run_id"].dropna()) if "parent_run_id" in frame.columns else set()
        keep = ~frame["run_id"].isin(parents)
    if T.ANALYSIS in frame.columns:
        keep &= frame[T.ANALYSIS].isna()
    if T.KIND in frame.columns:        # sweeps/ marks its parent runs labrun.kind=sweep|study
        keep &= ~frame[T.KIND].isin(PARENT_KINDS)
    if T.SWEEP in frame.columns:       # cells carry labrun.sweep too: only a parent is dropped
        parents = set(frame["parent_run_id"].dropna())
        keep &= ~(frame[T.SWEEP].notna() & frame["run_id"].isin(parents))
    return frame[keep].reset_index(drop=True)


def resolve_column(frame: "pd.DataFrame", key: str, *, what: str = "key") -> str:
    """A user's name for a column: exact, ``labrun.<key>``, ``params.<key>`` or a metric's final."""
    for candidate in (key, T.PREFIX + key, f"params.{key}", f"final.{key}"):
        if candidate in frame.columns:
            return candidate
    import difflib

    options = [c for c in frame.columns if _tag_column(c) and c not in (*BASE_COLUMNS, "description")
               and not c.startswith(("final.", "best.", "step.", T.ANALYSIS))]
    options.sort(key=lambda c: not c.startswith("params."))       # what a user groups by first
    short = [c[len("params."):] if c.startswith("params.") else c for c in options]
    close = difflib.get_close_matches(key, short, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else f"valid: {', '.join(short[:12])}"
    raise ConfigError(f"unknown {what} {key!r}: not a tag or param of these runs; {hint}")


_FILTER = re.compile(r"^\s*([^\s<>=!]+)\s*(==|!=|<=|>=|=|<|>)\s*(.*?)\s*$")


def apply_filters(frame: "pd.DataFrame", expressions: Iterable[str]) -> "pd.DataFrame":
    """Keep rows matching every ``KEY OP VALUE`` (``OP``: = != < <= > >=), e.g. ``train.lr<0.01``."""
    import pandas as pd

    mask = pd.Series(True, index=frame.index)
    for expr in expressions:
        m = _FILTER.match(expr)
        if not m:
            raise ConfigError(f"bad filter {expr!r}: use KEY OP VALUE with OP one of = != < <= > >= "
                              f"(e.g. {T.METHOD}=adam, train.lr<0.01)")
        key, op, text = m.groups()
        col = resolve_column(frame, key, what="filter key")
        series = frame[col]
        value: Any = text.strip("'\"")
        if pd.api.types.is_numeric_dtype(series):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"bad filter {expr!r}: {key} is numeric, {text!r} is not a number") from None
        elif op in ("<", "<=", ">", ">="):
            raise ConfigError(f"bad filter {expr!r}: {key} is text; use = or != with it")
        ops = {"=": series.eq, "==": series.eq, "!=": series.ne, "<": series.lt,
               "<=": series.le, ">": series.gt, ">=": series.ge}
        if op == "!=":
            hit = series.ne(value) | series.isna()
        else:
            hit = ops[op](value)
        mask &= hit.fillna(False).astype(bool)
    return frame[mask].reset_index(drop=True)


def curves_frame(run_ids: Iterable[str], metrics: Sequence[str], *, tracking_uri: str | None = None,
                 backend: str = "auto") -> "pd.DataFrame":
    """Metric histories in long format: ``run_id, metric, step, value, timestamp``."""
    import pandas as pd

    from tracking.backends import bulk

    client, uri = _client(tracking_uri)
    ids = list(dict.fromkeys(run_ids))
    chosen = backend_for(uri) if backend == "auto" else backend
    rows: list[tuple] = []
    if ids and metrics:
        found = (backends.metric_histories(uri, ids, list(metrics)) if chosen == "sql" else
                 bulk.metric_histories(uri, ids, list(metrics)) if chosen == "bulk" else None)
        if found is not None:
            rows = found
        else:
            def history(item: tuple[str, str]) -> list[tuple]:
                return [(item[0], item[1], m.step, m.value, m.timestamp)
                        for m in client.get_metric_history(*item)]

            with ThreadPoolExecutor(max_workers=8) as pool:
                for part in pool.map(history, [(r, k) for r in ids for k in metrics]):
                    rows.extend(part)
    frame = pd.DataFrame(rows, columns=["run_id", "metric", "step", "value", "timestamp"])
    frame = frame.astype({"step": "int64", "value": "float64", "timestamp": "int64"})
    return frame.sort_values(["run_id", "metric", "step", "timestamp"], kind="stable").reset_index(drop=True)
