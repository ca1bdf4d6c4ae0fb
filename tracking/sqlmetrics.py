"""A fast path for writing metrics into an SQL tracking store (SQLite, PostgreSQL).

MLflow's ``log_batch`` builds one ORM object per value: about half a millisecond each,
more than a 10 ms training step can afford at 20 metrics a step. For SQL stores the same
rows go in with one Core ``executemany`` (tens of microseconds per value), with MLflow's
own semantics: NaN stored as 0 with ``is_nan``, infinities clamped, duplicates ignored,
``latest_metrics`` holding the row with the largest (step, timestamp, value).

It is used only when the tables have exactly the columns this was written against
(mlflow 3.17); anything else, or any error, falls back to ``log_batch``.
"""
from __future__ import annotations

import math
import sys
from typing import Any, Sequence

EXPECTED = {"key", "value", "timestamp", "run_uuid", "step", "is_nan"}


def _sanitize(value: float) -> tuple[bool, float]:
    if math.isnan(value):
        return True, 0.0
    if math.isinf(value):
        return False, sys.float_info.max if value > 0 else -sys.float_info.max
    return False, value


class SqlMetricWriter:
    """Writes ``(key, value, timestamp_ms, step)`` rows straight into ``metrics``/``latest_metrics``."""

    def __init__(self, engine: Any, metrics: Any, latest: Any, dialect: str) -> None:
        self.engine, self.metrics, self.latest, self.dialect = engine, metrics, latest, dialect

    @classmethod
    def for_uri(cls, uri: str) -> "SqlMetricWriter | None":
        scheme = uri.split(":", 1)[0].split("+", 1)[0]
        if scheme not in ("sqlite", "postgresql"):
            return None
        try:
            import sqlalchemy as sa

            kwargs = {"connect_args": {"timeout": 30}} if scheme == "sqlite" else {}
            engine = sa.create_engine(uri, **kwargs)
            meta = sa.MetaData()
            metrics = sa.Table("metrics", meta, autoload_with=engine)
            latest = sa.Table("latest_metrics", meta, autoload_with=engine)
        except Exception:
            return None
        if {c.name for c in metrics.columns} != EXPECTED or {c.name for c in latest.columns} != EXPECTED:
            return None
        return cls(engine, metrics, latest, scheme)

    def _insert(self, table):
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        return insert(table)

    def write(self, run_id: str, rows: Sequence[Any]) -> None:
        if not rows:
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

    def close(self) -> None:
        self.engine.dispose()
