"""Bulk SQL reads of MLflow's tables: the sweep ledger, analysis' runs and metric histories."""
from __future__ import annotations

import math
from typing import Iterable, Sequence

from tracking.backends import announce_fallback, describe_error, fast_path_available
from tracking.backends.sql import SQL_SCHEMES, scheme_of, sql_engine, tables


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
        t = tables()
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
        t = tables()
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
        m = tables()["metrics"]
        rows: list[tuple] = []
        with engine.connect() as conn:
            for i in range(0, len(run_ids), _CHUNK):
                q = (sa.select(m.c.run_uuid, m.c.key, m.c.step, m.c.value, m.c.is_nan, m.c.timestamp)
                     .where(m.c.run_uuid.in_(list(run_ids[i:i + _CHUNK])), m.c.key.in_(list(keys))))
                rows.extend((r[0], r[1], r[2], math.nan if r[4] else r[3], r[5]) for r in conn.execute(q))
        return rows
    finally:
        engine.dispose()


def run_experiments(uri: str, run_ids: Sequence[str]) -> dict[str, str]:
    """``{run_id: experiment_id}`` of the runs that exist: what the bulk endpoint checks READ
    on before it returns their histories (as MLflow checks a run's experiment)."""
    import sqlalchemy as sa

    engine = sql_engine(uri, poolclass=sa.pool.NullPool)
    try:
        runs = tables()["runs"]
        found: dict[str, str] = {}
        with engine.connect() as conn:
            for i in range(0, len(run_ids), _CHUNK):
                q = sa.select(runs.c.run_uuid, runs.c.experiment_id).where(
                    runs.c.run_uuid.in_(list(run_ids[i:i + _CHUNK])))
                found.update((r[0], str(r[1])) for r in conn.execute(q))
        return found
    finally:
        engine.dispose()
