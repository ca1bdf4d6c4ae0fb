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
takes the SQL paths' public twins silently; a tracking server that is not a ``labrun server``
(no bulk endpoint) is logged once, as ``bulk`` falling back.

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
bulk           through ``labrun server``: ``runs`` and           the REST ``search_runs`` pages and
               ``histories`` run by the server on its store,     ``get_metric_history`` calls
               one POST each, Arrow tables back
               (:mod:`~tracking.backends.bulk`)
bulk_server    the server side of ``bulk``: READ checked per     no route (clients get 404 and fall
               experiment with mlflow.server.auth's private      back)
               ``_get_experiment_permission`` as a validator in
               its ``BEFORE_REQUEST_VALIDATORS``
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

This module holds the check (what each fast path was written for, and whether it may run);
the fast paths themselves are in :mod:`~tracking.backends.sql_writer`,
:mod:`~tracking.backends.sql_reads` and :mod:`~tracking.backends.private_api`, their SQL
plumbing in :mod:`~tracking.backends.sql`, and every name is importable from here.
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any, Iterable

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
    FastPath("bulk", "mlflow", (), False,
             "labrun server's bulk read endpoint (the runs tables and histories in one request)",
             "paged MlflowClient.search_runs and get_metric_history"),
    FastPath("bulk_server", "mlflow", (), False,
             "labrun server's bulk read endpoint (checks READ with mlflow.server.auth's private "
             "_get_experiment_permission and BEFORE_REQUEST_VALIDATORS)",
             "no endpoint: clients read through MLflow's REST API"),
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


def describe_error(exc: BaseException) -> str:
    """``Type: first line of the message`` (for one-line log messages)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


_LAZY = {
    "sql": ("SQL_SCHEMES", "WRITER_SCHEMES", "scheme_of", "sql_engine"),
    "sql_writer": ("SqlMetricWriter", "metric_writer"),
    "sql_reads": ("ledger_rows", "metric_histories", "read_runs", "run_experiments"),
    "private_api": ("dataset_entity", "delete_artifact", "is_mlflow_word_pair", "latest_metrics",
                    "read_project", "trial_id"),
}
_HOME = {name: module for module, names in _LAZY.items() for name in names}


def __getattr__(name: str) -> Any:
    """The fast paths, imported on first use (their modules import nothing heavy either,
    but the check above must not depend on them)."""
    if name in _HOME:
        return getattr(importlib.import_module(f"tracking.backends.{_HOME[name]}"), name)
    raise AttributeError(f"module 'tracking.backends' has no attribute {name!r}")


__all__ = ["COLUMNS", "FAST_PATHS", "MLFLOW_WRITTEN_FOR", "OPTUNA_WRITTEN_FOR", "FastPath", "announce_fallback",
           "describe_error", "fast_path_available", "installed_version", "reset", "version_mismatch",
           *sorted(_HOME)]
