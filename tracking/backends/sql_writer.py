"""The bulk SQL metric writer: rows straight into MLflow's ``metrics``/``latest_metrics``."""
from __future__ import annotations

import math
import sys
from typing import Any, Sequence

from tracking.backends import announce_fallback, describe_error, fast_path_available
from tracking.backends.sql import WRITER_SCHEMES, scheme_of, sql_engine


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
