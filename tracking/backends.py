"""The one place labrun goes below MLflow's and Optuna's public API.

Everything here is either schema-level (SQL on MLflow's own tables) or private (Optuna's
``Trial._trial_id``), and each such *fast path* has a public-API twin the callers fall
back to. A fast path is used only when :func:`fast_path_available` says so:

- the installed library is a version this was written against (:data:`MLFLOW_WRITTEN_FOR`,
  :data:`OPTUNA_WRITTEN_FOR`),
- for SQL, the tables hold the columns this reads or writes (:data:`COLUMNS`; the metric
  writer inserts rows, so its tables must hold exactly those columns),
- and ``LABRUN_PUBLIC_API_ONLY`` is not set (``=1`` forces every public path: tests, or a
  store you would rather not have touched directly).

Otherwise the caller uses the public API and one line goes to the ``labrun`` logger, once
per process per (fast path, reason). A store that is not SQL at all (a tracking server)
simply takes the public path: nothing is logged for that.

=============  ================================================  =====================================
fast path      what it does                                      public fallback
=============  ================================================  =====================================
metric_writer  bulk INSERT into ``metrics`` / ``latest_metrics``  ``MlflowClient.log_batch``
ledger         (run_id, status, start_time, few tags) per         paged ``MlflowClient.search_runs``
               experiment from ``runs`` + ``tags``
runs           five bulk SELECTs (``runs``, ``tags``, ``params``,  paged ``search_runs`` +
               ``latest_metrics``, ``metrics``) for analysis     ``get_metric_history``
histories     metric histories of many runs, one SELECT         ``get_metric_history`` per run and key
               per chunk on ``metrics``
latest         a run's latest metrics with their steps           ``get_metric_history`` per metric
               (``RunData._metric_objs``, private)
delete         prune a checkpoint file from the artifact store   keep the file (logged at debug)
               (``get_artifact_repository``, internal module)
project        an MLflow project's entry points and typed         a local folder's MLproject read as
               parameters, git URIs fetched (``_project_spec``)  YAML (no git URIs)
run_names      is "classy-wolf-669" one of MLflow's made-up      the adjective-noun-NNN shape alone
               run names (its private word lists)
dataset_entity a dataset as a run input for a run that is not       ``mlflow.log_input`` (active run)
               the active one (``Dataset._to_mlflow_entity``)
trial_id       Optuna's storage id of a trial (``_trial_id``)     ``RDBStorage.get_study_id_from_name``
                                                                 + ``get_trial_id_from_study_id_trial_number``
=============  ================================================  =====================================

Heavy imports (mlflow, optuna, sqlalchemy) happen inside the functions, never at import.
"""
from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from tracking import env

log = logging.getLogger("labrun")

# ----------------------------------------------------------------------------- what this was written for

MLFLOW_WRITTEN_FOR: tuple[str, ...] = ("3.17",)
"""MLflow versions (dotted prefixes) whose database schema the SQL fast paths were written
against: mlflow 3.17.2, ``mlflow/store/tracking/dbmodels/models.py``."""

OPTUNA_WRITTEN_FOR: tuple[str, ...] = ("4", "5")
"""Optuna versions (dotted prefixes) whose ``Trial._trial_id`` this relies on: the range
pyproject.toml allows (>=4.0,<6), read in Optuna 5.0.0's ``optuna/trial/_trial.py``."""

COLUMNS: dict[str, frozenset[str]] = {
    "runs": frozenset({"run_uuid", "experiment_id", "name", "status", "start_time", "end_time",
                       "lifecycle_stage"}),
    "tags": frozenset({"key", "value", "run_uuid"}),
    "params": frozenset({"key", "value", "run_uuid"}),
    "metrics": frozenset({"key", "value", "timestamp", "run_uuid", "step", "is_nan"}),
    "latest_metrics": frozenset({"key", "value", "timestamp", "run_uuid", "step", "is_nan"}),
}
"""The columns of MLflow 3.17's tables that labrun reads or writes (``runs`` has more; the
readers only need these)."""

SQL_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mssql")
WRITER_SCHEMES = ("sqlite", "postgresql")   # the dialects with INSERT ... ON CONFLICT used below


@dataclass(frozen=True)
class FastPath:
    name: str
    library: str                 # "mlflow" | "optuna"
    tables: tuple[str, ...]      # MLflow tables it touches (empty: not SQL)
    exact: bool                  # the tables must have exactly COLUMNS (rows are inserted)
    what: str
    public: str


FAST_PATHS: dict[str, FastPath] = {p.name: p for p in (
    FastPath("metric_writer", "mlflow", ("metrics", "latest_metrics"), True,
             "bulk SQL metric writer (MLflow's metrics/latest_metrics tables)", "MlflowClient.log_batch"),
    FastPath("ledger", "mlflow", ("runs", "tags"), False,
             "sweep ledger's SQL read (MLflow's runs/tags tables)", "paged MlflowClient.search_runs"),
    FastPath("runs", "mlflow", ("runs", "tags", "params", "latest_metrics", "metrics"), False,
             "analysis' bulk SQL read (MLflow's runs/tags/params/latest_metrics/metrics tables)",
             "paged MlflowClient.search_runs and get_metric_history"),
    FastPath("histories", "mlflow", ("metrics",), False,
             "analysis' bulk SQL read of metric histories (MLflow's metrics table)",
             "MlflowClient.get_metric_history per run and metric"),
    FastPath("latest", "mlflow", (), False, "MLflow's private RunData._metric_objs",
             "get_metric_history per metric"),
    FastPath("delete", "mlflow", (), False,
             "checkpoint pruning through mlflow.store.artifact.artifact_repository_registry",
             "keeping the pruned checkpoints in the artifact store"),
    FastPath("project", "mlflow", (), False,
             "MLflow's private project loader (mlflow.projects._project_spec, utils._fetch_project)",
             "reading a local folder's MLproject as YAML"),
    FastPath("run_names", "mlflow", (), False,
             "MLflow's private run-name word lists (mlflow.utils.name_utils._GENERATOR_*)",
             "the adjective-noun-NNN shape alone"),
    FastPath("dataset_entity", "mlflow", (), False,
             "MLflow's private Dataset._to_mlflow_entity (inputs of a run that is not the active one)",
             "mlflow.log_input on the active run only"),
    FastPath("trial_id", "optuna", (), False, "Optuna's private Trial._trial_id",
             "RDBStorage.get_study_id_from_name + get_trial_id_from_study_id_trial_number"),
)}

_announced: set[tuple[str, str]] = set()
_schema_ok: set[tuple[str, str]] = set()      # (kind, store) whose columns were checked and fit
_optuna_storages: dict[str, Any] = {}


def reset() -> None:
    """Forget what was logged and checked (tests)."""
    _announced.clear()
    _schema_ok.clear()
    _optuna_storages.clear()


# ----------------------------------------------------------------------------- the check

def installed_version(library: str) -> str:
    import importlib

    return str(importlib.import_module(library).__version__)


def _matches(version: str, prefixes: Iterable[str]) -> bool:
    parts = version.split(".")
    return any(parts[:len(p.split("."))] == p.split(".") for p in prefixes)


def version_mismatch(library: str) -> str | None:
    """Why the installed ``library`` is not one the fast paths were written for (None: it is)."""
    written = MLFLOW_WRITTEN_FOR if library == "mlflow" else OPTUNA_WRITTEN_FOR
    installed = installed_version(library)
    if _matches(installed, written):
        return None
    name = {"mlflow": "MLflow", "optuna": "Optuna"}[library]
    return (f"{name} {installed} is installed, this was written for "
            f"{name} {' / '.join(w + '.x' for w in written)}")


def announce_fallback(kind: str, reason: str, *, level: int = logging.WARNING) -> bool:
    """Log that ``kind`` takes the public path and why: once per process per (kind, reason).

    Returns False, so that a check can end with ``return announce_fallback(...)``.
    """
    if (kind, reason) not in _announced:
        _announced.add((kind, reason))
        path = FAST_PATHS[kind]
        log.log(level, "labrun: %s off: %s; using %s instead", path.what, reason, path.public)
    return False


def _schema_mismatch(path: FastPath, engine: Any) -> str | None:
    import sqlalchemy as sa

    try:
        inspector = sa.inspect(engine)
        for table in path.tables:
            present = {c["name"] for c in inspector.get_columns(table)}
            want = COLUMNS[table]
            missing, extra = sorted(want - present), sorted(present - want)
            if missing or (path.exact and extra):
                return (f"table {table!r} differs from MLflow 3.17's"
                        + (f", missing {', '.join(missing)}" if missing else "")
                        + (f", extra {', '.join(extra)}" if path.exact and extra else ""))
    except Exception as exc:  # no such table, no connection, permissions ...
        return f"cannot read the store's schema ({describe_error(exc)})"
    return None


def fast_path_available(kind: str, *, engine: Any = None) -> bool:
    """True when ``kind``'s fast path may be used; else logs why (once) and returns False.

    Checks the ``LABRUN_PUBLIC_API_ONLY`` switch, then the installed library's version, then
    (for an SQL fast path given ``engine``, an SQLAlchemy engine on the tracking store) the
    tables' columns; a fitting schema is remembered per store for the process. Without
    ``engine`` only the switch and the version are checked (a cheap look before connecting).
    """
    path = FAST_PATHS[kind]
    if env.LABRUN_PUBLIC_API_ONLY.get():
        return announce_fallback(kind, f"{env.LABRUN_PUBLIC_API_ONLY.name} is set", level=logging.INFO)
    reason = version_mismatch(path.library)
    if reason:
        return announce_fallback(kind, reason)
    if path.tables and engine is not None:
        key = (kind, engine.url.render_as_string(hide_password=False))
        if key not in _schema_ok:
            reason = _schema_mismatch(path, engine)
            if reason:
                return announce_fallback(kind, reason)
            _schema_ok.add(key)
    return True


# ----------------------------------------------------------------------------- SQL helpers

def scheme_of(uri: str) -> str:
    return uri.split(":", 1)[0].split("+", 1)[0].lower()


def sql_engine(uri: str, **kwargs: Any) -> Any:
    """An SQLAlchemy engine on ``uri``; ``postgresql://`` means psycopg2 when psycopg 3 is absent."""
    import importlib.util

    import sqlalchemy as sa

    if uri.startswith(("postgresql://", "postgres://")) and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        uri = "postgresql+psycopg2://" + uri.split("://", 1)[1]
    return sa.create_engine(uri, **kwargs)


def describe_error(exc: BaseException) -> str:
    """``Type: first line of the message`` (for one-line log messages)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _tables() -> dict[str, Any]:
    from sqlalchemy import column, table

    return {name: table(name, *[column(c) for c in sorted(cols)]) for name, cols in COLUMNS.items()}


# ----------------------------------------------------------------------------- metric writer

def _sanitize(value: float) -> tuple[bool, float]:
    """MLflow's own storage of odd values: NaN as 0 with ``is_nan``, infinities clamped."""
    if math.isnan(value):
        return True, 0.0
    if math.isinf(value):
        return False, sys.float_info.max if value > 0 else -sys.float_info.max
    return False, value


class SqlMetricWriter:
    """Writes ``(key, value, timestamp_ms, step)`` rows straight into ``metrics``/``latest_metrics``.

    MLflow's ``log_batch`` builds one ORM object per value: about half a millisecond each.
    Here the same rows go in as one bulk insert per transaction, with MLflow's semantics: NaN
    stored as 0 with ``is_nan``, infinities clamped, duplicates ignored, ``latest_metrics``
    holding the row with the largest (step, timestamp, value).

    On SQLite the rows go as plain tuples through the DB-API cursor of a connection this
    writer owns (:meth:`_write_sqlite`): SQLAlchemy's per-row parameter processing cost more
    CPU than SQLite's own insert. PostgreSQL keeps the SQLAlchemy Core statement.
    """

    def __init__(self, engine: Any, metrics: Any, latest: Any, dialect: str) -> None:
        self.engine, self.metrics, self.latest, self.dialect = engine, metrics, latest, dialect
        self._con: Any = None
        database = engine.url.database if dialect == "sqlite" else None
        self._sqlite = bool(database) and database != ":memory:"   # a memory store: one per connection

    @classmethod
    def for_uri(cls, uri: str) -> "SqlMetricWriter | None":
        return metric_writer(uri)

    def _insert(self, table: Any) -> Any:
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        return insert(table)

    def write(self, run_id: str, rows: Sequence[Any]) -> None:
        if not rows:
            return
        if self._sqlite:
            self._write_sqlite(run_id, rows)
            return
        records, latest = [], {}
        for key, raw, timestamp, step in rows:
            is_nan, value = _sanitize(raw)
            rec = {"key": key, "value": value, "timestamp": timestamp, "run_uuid": run_id,
                   "step": step, "is_nan": is_nan}
            records.append(rec)
            cur = latest.get(key)
            if cur is None or (rec["step"], rec["timestamp"], rec["value"]) > \
                    (cur["step"], cur["timestamp"], cur["value"]):
                latest[key] = rec
        import sqlalchemy as sa

        ins = self._insert(self.metrics).on_conflict_do_nothing()
        up = self._insert(self.latest)
        ex = up.excluded
        t = self.latest.c
        newer = sa.tuple_(ex.step, ex.timestamp, ex.value) > sa.tuple_(t.step, t.timestamp, t.value)
        up = up.on_conflict_do_update(
            index_elements=["key", "run_uuid"],
            set_={"value": ex.value, "timestamp": ex.timestamp, "step": ex.step, "is_nan": ex.is_nan},
            where=newer,
        )
        with self.engine.begin() as conn:
            conn.execute(ins, records)
            for rec in sorted(latest.values(), key=lambda r: r["key"]):  # stable lock order
                conn.execute(up, rec)

    def _connection(self) -> Any:
        """A DB-API connection opened with the engine's own arguments, in autocommit mode
        so that :meth:`_write_sqlite` says where each transaction begins and ends."""
        if self._con is None:
            import sqlite3

            args, kwargs = self.engine.dialect.create_connect_args(self.engine.url)
            kwargs = {**kwargs, "timeout": 30, "isolation_level": None, "check_same_thread": False}
            self._con = sqlite3.connect(*args, **kwargs)
        return self._con

    def _write_sqlite(self, run_id: str, rows: Sequence[Any]) -> None:
        """One ``BEGIN IMMEDIATE`` transaction: rows in logged order, then one upsert per key.

        Durability is SQLite's and the store's own (journal mode and ``synchronous`` are left
        as MLflow set them): the commit returns once the rows are on disk, as ``log_batch``'s.
        ``ON CONFLICT DO NOTHING`` skips exact duplicates only; a row breaking any other
        constraint fails the batch (``INSERT OR IGNORE`` would drop it silently).
        """
        params, latest = [], {}
        for key, raw, timestamp, step in rows:
            is_nan, value = (False, raw) if -_FMAX <= raw <= _FMAX else _sanitize(raw)
            row = (key, value, timestamp, run_id, step, is_nan)
            params.append(row)
            cur = latest.get(key)
            if cur is None or (step, timestamp, value) > (cur[4], cur[2], cur[1]):
                latest[key] = row
        con = self._connection()
        con.execute("BEGIN IMMEDIATE")   # the write lock now, not at the first insert
        try:
            con.executemany(_SQLITE_INSERT, params)
            con.executemany(_SQLITE_LATEST, sorted(latest.values()))
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
        self.engine.dispose()


_FMAX = sys.float_info.max
_SQLITE_INSERT = ("INSERT INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
                  "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING")
_SQLITE_LATEST = (
    "INSERT INTO latest_metrics (key, value, timestamp, run_uuid, step, is_nan) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (key, run_uuid) DO UPDATE SET value = excluded.value, timestamp = excluded.timestamp, "
    "step = excluded.step, is_nan = excluded.is_nan "
    "WHERE (excluded.step, excluded.timestamp, excluded.value) > "
    "(latest_metrics.step, latest_metrics.timestamp, latest_metrics.value)")


def metric_writer(uri: str) -> SqlMetricWriter | None:
    """The bulk writer for an SQLite/PostgreSQL store, or None: use ``log_batch``."""
    scheme = scheme_of(uri)
    if scheme not in WRITER_SCHEMES:
        return None
    if not fast_path_available("metric_writer"):
        return None
    try:
        import sqlalchemy as sa

        engine = sql_engine(uri, **({"connect_args": {"timeout": 30}} if scheme == "sqlite" else {}))
    except Exception as exc:
        announce_fallback("metric_writer", f"cannot open the store ({describe_error(exc)})")
        return None
    try:
        if not fast_path_available("metric_writer", engine=engine):
            engine.dispose()
            return None
        meta = sa.MetaData()
        metrics = sa.Table("metrics", meta, autoload_with=engine)
        latest = sa.Table("latest_metrics", meta, autoload_with=engine)
    except Exception as exc:
        engine.dispose()
        announce_fallback("metric_writer", f"cannot read the store's schema ({describe_error(exc)})")
        return None
    return SqlMetricWriter(engine, metrics, latest, scheme)


# ----------------------------------------------------------------------------- sweep ledger

def ledger_rows(uri: str, experiment_id: str,
                tag_keys: Sequence[str]) -> list[tuple[str, str, int, dict[str, str]]] | None:
    """``(run_id, status, start_time, {tag: value})`` of the experiment's active runs, with
    only ``tag_keys`` among the tags, in one query; None: use ``search_runs``.

    ``search_runs`` also loads every param and metric of every run (35+ rows a run), which
    makes a 1,000-run check take over a second; this reads the few tag rows instead.
    """
    if scheme_of(uri) not in SQL_SCHEMES:
        return None
    if not fast_path_available("ledger"):
        return None
    try:
        import sqlalchemy as sa

        engine = sql_engine(uri, poolclass=sa.pool.NullPool)
    except Exception as exc:
        announce_fallback("ledger", f"cannot open the store ({describe_error(exc)})")
        return None
    try:
        if not fast_path_available("ledger", engine=engine):
            return None
        t = _tables()
        runs, tags = t["runs"], t["tags"]
        query = (sa.select(runs.c.run_uuid, runs.c.status, runs.c.start_time, tags.c.key, tags.c.value)
                 .select_from(runs.join(tags, tags.c.run_uuid == runs.c.run_uuid))
                 .where(runs.c.experiment_id == int(experiment_id), runs.c.lifecycle_stage == "active",
                        tags.c.key.in_(list(tag_keys))))
        with engine.connect() as conn:
            found = conn.execute(query).all()
    except Exception as exc:
        announce_fallback("ledger", f"the query failed ({describe_error(exc)})")
        return None
    finally:
        engine.dispose()
    out: dict[str, tuple[str, str, int, dict[str, str]]] = {}
    for run_id, status, start, key, value in found:
        out.setdefault(run_id, (run_id, status, start, {}))[3][key] = value
    return list(out.values())


# ----------------------------------------------------------------------------- analysis bulk read

def read_runs(uri: str, experiment_ids: Sequence[str], metric_keys: Sequence[str] | None, *,
              tag_prefixes: Sequence[str], tag_keys: Sequence[str] = (),
              skip_tags: Iterable[str] = (), exclude_prefixes: Sequence[str] = ()) -> dict[str, list[tuple]] | None:
    """The experiments' active runs as long tables, with five bulk statements; None: use
    ``search_runs`` (the fast path is off, logged once).

    Returns ``{"runs": [(run_id, experiment_id, name, status, start_time, end_time)],
    "tags": [(run_id, key, value)], "params": [(run_id, key, value)],
    "latest": [(run_id, key, value, step, is_nan)], "extrema": [(run_id, key, min, max)]}``:
    tags whose key starts with one of ``tag_prefixes`` (and none of ``exclude_prefixes``)
    or is in ``tag_keys``, minus ``skip_tags``; extrema over non-NaN values of ``metric_keys`` (None: every metric).

    Statements are built with SQLAlchemy (dialect-correct quoting for SQLite, PostgreSQL,
    MySQL) and run on the raw DB-API cursor: ``fetchall`` in C is several times faster than
    SQLAlchemy's row objects for the ~40 rows a run has.
    """
    if scheme_of(uri) not in SQL_SCHEMES:
        return None
    if not fast_path_available("runs"):
        return None
    import sqlalchemy as sa
    from sqlalchemy import and_, false, func, or_, select

    engine = sql_engine(uri, poolclass=sa.pool.NullPool)
    try:
        if not fast_path_available("runs", engine=engine):
            return None
        t = _tables()
        runs, tags, params, latest, mtab = t["runs"], t["tags"], t["params"], t["latest_metrics"], t["metrics"]
        ids = [int(e) for e in experiment_ids]
        active = and_(runs.c.experiment_id.in_(ids), runs.c.lifecycle_stage == "active")
        keep = or_(*[tags.c.key.like(p + "%") for p in tag_prefixes])
        if exclude_prefixes:
            keep = and_(keep, sa.not_(or_(*[tags.c.key.like(p + "%") for p in exclude_prefixes])))
        wanted_tags = and_(or_(keep, *[tags.c.key == k for k in tag_keys]),
                           tags.c.key.not_in(sorted(skip_tags)))
        best = (select(mtab.c.run_uuid, mtab.c.key, func.min(mtab.c.value), func.max(mtab.c.value))
                .select_from(mtab.join(runs, mtab.c.run_uuid == runs.c.run_uuid))
                .where(active, mtab.c.is_nan == false()))
        if metric_keys is not None:
            best = best.where(mtab.c.key.in_(list(metric_keys)) if metric_keys else false())
        statements = {
            "runs": select(runs.c.run_uuid, runs.c.experiment_id, runs.c.name, runs.c.status,
                           runs.c.start_time, runs.c.end_time).where(active),
            "tags": select(tags.c.run_uuid, tags.c.key, tags.c.value)
            .select_from(tags.join(runs, tags.c.run_uuid == runs.c.run_uuid)).where(active, wanted_tags),
            "params": select(params.c.run_uuid, params.c.key, params.c.value)
            .select_from(params.join(runs, params.c.run_uuid == runs.c.run_uuid)).where(active),
            "latest": select(latest.c.run_uuid, latest.c.key, latest.c.value, latest.c.step, latest.c.is_nan)
            .select_from(latest.join(runs, latest.c.run_uuid == runs.c.run_uuid)).where(active),
            "extrema": best.group_by(mtab.c.run_uuid, mtab.c.key),
        }
        out: dict[str, list[tuple]] = {}
        conn = engine.raw_connection()
        try:
            cur = conn.cursor()
            for name, stmt in statements.items():
                cur.execute(str(stmt.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})))
                out[name] = cur.fetchall()
            cur.close()
        finally:
            conn.close()
        return out
    finally:
        engine.dispose()


# ----------------------------------------------------------------------------- Optuna

def _optuna_storage(storage: Any) -> Any:
    if not isinstance(storage, str):
        return storage
    if storage not in _optuna_storages:
        import optuna

        _optuna_storages[storage] = optuna.storages.RDBStorage(storage)
    return _optuna_storages[storage]


def trial_id(trial: Any, *, storage: Any, study_name: str | None = None) -> int:
    """The storage's id of ``trial`` (what ``optuna.trial.Trial(study, trial_id)`` takes).

    Optuna exposes only ``trial.number`` publicly (``Trial.trial_id`` was removed in 2.0);
    the id is ``trial._trial_id``. The public fallback asks the storage (``storage``: an
    RDB URL or a ``BaseStorage``) by study name and trial number: two small queries.
    """
    if fast_path_available("trial_id"):
        value = getattr(trial, "_trial_id", None)
        if isinstance(value, int):
            return value
        announce_fallback("trial_id", f"{type(trial).__name__} has no integer _trial_id")
    st = _optuna_storage(storage)
    study_id = st.get_study_id_from_name(study_name if study_name is not None else trial.study.study_name)
    return int(st.get_trial_id_from_study_id_trial_number(study_id, trial.number))


# ----------------------------------------------------------------------------- histories, latest, delete

_CHUNK = 500


def metric_histories(uri: str, run_ids: Sequence[str], keys: Sequence[str]) -> list[tuple] | None:
    """``(run_id, key, step, value, timestamp)`` of every logged value, NaN restored; one
    statement per chunk of runs instead of a ``get_metric_history`` call per run and key.
    None: the caller uses ``get_metric_history``."""
    if scheme_of(uri) not in SQL_SCHEMES or not fast_path_available("histories"):
        return None
    import sqlalchemy as sa

    engine = sql_engine(uri, poolclass=sa.pool.NullPool)
    try:
        if not fast_path_available("histories", engine=engine):
            return None
        m = _tables()["metrics"]
        rows: list[tuple] = []
        with engine.connect() as conn:
            for i in range(0, len(run_ids), _CHUNK):
                q = (sa.select(m.c.run_uuid, m.c.key, m.c.step, m.c.value, m.c.is_nan, m.c.timestamp)
                     .where(m.c.run_uuid.in_(list(run_ids[i:i + _CHUNK])), m.c.key.in_(list(keys))))
                rows.extend((r[0], r[1], r[2], math.nan if r[4] else r[3], r[5]) for r in conn.execute(q))
        return rows
    finally:
        engine.dispose()


def latest_metrics(client: Any, run: Any) -> list[tuple[str, float, int]]:
    """``(key, value, step)`` of a run's latest values, as MLflow's ``latest_metrics`` holds
    them. The public ``run.data.metrics`` has no steps: the fallback reads each history
    (one call per metric) and takes MLflow's own order, the largest (step, timestamp, value)."""
    objs = getattr(run.data, "_metric_objs", None) if fast_path_available("latest") else None
    if objs is not None:
        return [(m.key, m.value, m.step) for m in objs]
    if fast_path_available("latest"):
        announce_fallback("latest", "RunData has no _metric_objs")
    out = []
    for key in run.data.metrics:
        history = client.get_metric_history(run.info.run_id, key)
        last = max(history, key=lambda m: (m.step, m.timestamp, m.value))
        out.append((key, last.value, last.step))
    return out


def delete_artifact(artifact_uri: str, path: str, _repos: dict[str, Any] = {}) -> bool:
    """Delete ``path`` under a run's artifact root; False where the store cannot (or the
    internal registry moved): the caller keeps the file. One repository per root is cached."""
    if not fast_path_available("delete"):
        return False
    try:
        if artifact_uri not in _repos:
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            _repos[artifact_uri] = get_artifact_repository(artifact_uri)
        _repos[artifact_uri].delete_artifacts(path)
        return True
    except ImportError as exc:
        return announce_fallback("delete", describe_error(exc))
    except Exception as exc:  # a store that cannot delete (e.g. some object stores)
        log.debug("could not delete artifact %s under %s: %s", path, artifact_uri, exc)
        return False


# ----------------------------------------------------------------------------- MLflow projects

def read_project(uri: str, version: str | None = None) -> tuple[str, str, dict[str, dict[str, tuple[str, Any]]]]:
    """``(work_dir, name, {entry: {parameter: (type, default)}})`` of an MLflow project.

    MLflow's own loader also fetches a git URI the way ``mlflow run`` does; without it only a
    local folder can be read (its MLproject, MLflow's documented YAML). Raises ValueError
    with a one-line reason.
    """
    from pathlib import Path

    if fast_path_available("project"):
        try:
            from mlflow.projects import _project_spec
            from mlflow.projects.utils import _fetch_project
        except ImportError as exc:
            announce_fallback("project", describe_error(exc))
        else:
            work_dir = _fetch_project(uri=uri, version=version)
            project = _project_spec.load_project(work_dir)
            entries = {name: {k: (p.type, p.default) for k, p in ep.parameters.items()}
                       for name, ep in (project._entry_points or {}).items()}
            return work_dir, project.name or Path(work_dir).name, entries
    return _read_project_yaml(Path(uri))


def _read_project_yaml(folder: Any) -> tuple[str, str, dict[str, dict[str, tuple[str, Any]]]]:
    from tracking.tasks import read_mlproject  # the one reader of MLproject files

    return read_mlproject(folder).declared()


def is_mlflow_word_pair(first: str, second: str) -> bool:
    """Whether ``first-second`` come from the word lists MLflow draws run names from; where
    those lists are not to be had, every ``word-word`` pair counts (the shape was checked)."""
    if fast_path_available("run_names"):
        try:
            from mlflow.utils import name_utils as nu

            preds = {w.lower() for w in nu._GENERATOR_PREDICATES}
            nouns = {w.lower() for w in nu._GENERATOR_NOUNS}
        except (ImportError, AttributeError) as exc:
            announce_fallback("run_names", describe_error(exc))
        else:
            return first in preds and second in nouns
    return first.isalpha() and second.isalpha()


def dataset_entity(dataset: Any) -> Any:
    """The ``mlflow.entities.Dataset`` of an ``mlflow.data`` dataset, for ``log_inputs`` on a
    run other than the active one; ValueError where MLflow's private conversion is off."""
    if fast_path_available("dataset_entity") and hasattr(dataset, "_to_mlflow_entity"):
        return dataset._to_mlflow_entity()
    raise ValueError("logging a dataset to a run that is not the active MLflow run needs "
                     "MLflow 3.17's Dataset._to_mlflow_entity; start the run with mlflow.start_run")
