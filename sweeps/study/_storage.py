"""Where a study lives: an Optuna RDB storage with heartbeats, and its URL as shown and as opened.

Several workers share one storage (an SQLite file on one machine, PostgreSQL for many);
the heartbeats are what let a live worker notice a dead one's trial and have it retried.
"""
from __future__ import annotations

import time
from typing import Any

from sweeps.spec import StudySpec
from tracking.config import ConfigError


def make_storage(spec: StudySpec) -> Any:
    """An RDB storage with heartbeats, so a killed worker's trial is noticed and retried."""
    import warnings

    import optuna
    from optuna.storages import RDBStorage

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    kwargs: dict[str, Any] = {}
    try:  # Optuna >= 4.9 renamed the retry callback and its argument
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        kwargs["heartbeat_stale_trial_callback"] = RetryHeartbeatStaleTrialCallback(max_retry=spec.max_retry)
    except ImportError:
        from optuna.storages import RetryFailedTrialCallback

        kwargs["failed_trial_callback"] = RetryFailedTrialCallback(max_retry=spec.max_retry)
    if spec.storage.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    for attempt in range(4):
        try:
            return RDBStorage(storage_url(spec.storage), heartbeat_interval=spec.heartbeat_s,
                              grace_period=2 * spec.heartbeat_s, **kwargs)
        except (ValueError, ImportError) as exc:
            raise ConfigError(f"cannot open Optuna storage {safe_url(spec.storage)!r}: "
                              f"{str(exc).splitlines()[0]}") from None
        except Exception as exc:  # workers starting together race to create the tables
            if attempt == 3:
                raise ConfigError(f"cannot open Optuna storage {safe_url(spec.storage)!r}: "
                                  f"{str(exc).splitlines()[0]}") from None
            time.sleep(1.0 + attempt)


def storage_url(url: str) -> str:
    """``postgresql://`` means psycopg (3) to SQLAlchemy 2.1; use psycopg2 when only it exists."""
    if url.startswith("postgresql://"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
            return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def safe_url(url: str) -> str:
    """The storage URL without a password (it goes into tags and logs)."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}@{host}"
    return url


def check_storage_apart(storage: str, tracking: str) -> None:
    """Optuna and MLflow both version their schema in an ``alembic_version`` table, so one
    database schema cannot hold both: each would find the other's revision and stop."""
    norm = lambda u: u.replace("+psycopg2", "").replace("+psycopg", "").rstrip("/")  # noqa: E731
    if norm(storage) == norm(tracking) and not storage.startswith("sqlite"):
        raise ConfigError(f"the Optuna storage and the MLflow store are the same database "
                          f"({safe_url(storage)}); give Optuna another database or schema, e.g. "
                          f"{safe_url(storage)}?options=-csearch_path%3Doptuna")
    if norm(storage) == norm(tracking):
        raise ConfigError(f"the Optuna storage and the MLflow store are the same SQLite file "
                          f"({storage}); use another file such as sqlite:///optuna.db")
