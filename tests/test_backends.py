"""tracking.backends: every fast path below MLflow's/Optuna's public API, tested both ways.

Each fast path (bulk SQL metric writer, ledger read, analysis bulk read, Optuna trial id)
must give what its public fallback gives; a version the code was not written for, a
schema that moved, or ``LABRUN_PUBLIC_API_ONLY=1`` selects the fallback with exactly one
logged line per process and reason.
"""
from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
import uuid

import pytest

from tests.helpers import REPO
from tracking import backends


pytestmark = pytest.mark.usefixtures("fast_paths_on")


def _lines(caplog, kind):
    return [r.getMessage() for r in caplog.records
            if r.name == "labrun" and backends.FAST_PATHS[kind].what in r.getMessage()]


def _populate(client, exp_id):
    """Runs the ledger and analysis read: NaN/inf/duplicate metrics, odd statuses, a deleted run."""
    from mlflow.entities import Metric, Param, RunTag

    ids = []
    for i, (status, method) in enumerate([("FINISHED", "adam"), ("FAILED", "adam"), ("KILLED", "sgd"),
                                          ("FINISHED", "sgd"), ("RUNNING", "sgd")]):
        rid = client.create_run(exp_id).info.run_id
        tags = {"labrun.task": "toy", "labrun.method": method, "labrun.seed": str(i % 2),
                "labrun.fingerprint": f"fp-{method}-{i % 2}", "labrun.group": f"g-{method}",
                "labrun.host": "elsewhere", "labrun.pid": "1", "labrun.heartbeat": "0",
                "labrun.pruned": "true" if i == 2 else "false"}
        if i == 3:
            tags["mlflow.parentRunId"] = ids[0]
        values = [3.0, float("nan"), float("inf"), -float("inf"), 1.0 + i]
        metrics = [Metric("metric.mse.val", v, 1_000 + s, s) for s, v in enumerate(values)]
        metrics += [Metric("metric.mse.val", 1.0 + i, 1_004, 4),            # exact duplicate
                    Metric("metric.acc", 0.5 + 0.1 * i, 1_000, 0)]
        client.log_batch(rid, metrics=metrics, params=[Param("train.lr", "1e-3" if i else "0.001")],
                         tags=[RunTag(k, v) for k, v in tags.items()])
        if status != "RUNNING":
            client.set_terminated(rid, status)
        ids.append(rid)
    gone = client.create_run(exp_id, tags={"labrun.task": "toy", "labrun.fingerprint": "fp-gone"})
    client.delete_run(gone.info.run_id)
    return ids


# ----------------------------------------------------------------------------- the declarations

def test_importing_tracking_stays_light():
    code = ("import sys, tracking, tracking.backends, tracking.metrics, tracking.sqlmetrics, tracking.env; "
            "heavy = {'mlflow', 'optuna', 'sqlalchemy', 'sweeps', 'analysis'} & "
            "{m.split('.')[0] for m in sys.modules}; print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_declared_versions_and_columns_are_the_installed_ones():
    """Fails when MLflow/Optuna are upgraded past what the fast paths were checked against:
    re-read the schema / ``Trial``, then widen MLFLOW_WRITTEN_FOR / OPTUNA_WRITTEN_FOR."""
    from mlflow.store.tracking.dbmodels import models

    assert backends.version_mismatch("mlflow") is None
    assert backends.version_mismatch("optuna") is None
    for table, cls in {"runs": models.SqlRun, "tags": models.SqlTag, "params": models.SqlParam,
                       "metrics": models.SqlMetric, "latest_metrics": models.SqlLatestMetric}.items():
        present = {c.name for c in cls.__table__.columns}
        assert backends.COLUMNS[table] <= present, table
        if table in ("metrics", "latest_metrics"):
            assert backends.COLUMNS[table] == present, table


def test_version_prefixes():
    assert backends._matches("3.17.2", ("3.17",)) and backends._matches("3.17.3.dev0", ("3.17",))
    assert not backends._matches("3.18.0", ("3.17",)) and not backends._matches("3.1.7", ("3.17",))
    assert backends._matches("5.0.0", ("4", "5")) and not backends._matches("6.0.0", ("4", "5"))


# ----------------------------------------------------------------------------- version mismatch

def test_mlflow_version_mismatch_uses_public_api_with_one_line_each(store, caplog):
    import pandas as pd

    from analysis import query
    from sweeps.ledger import LEDGER_TAGS, Ledger
    from tracking.metrics import MetricLogger

    exp = store.create_experiment("toy")
    _populate(store, exp)
    run_id = store.create_run(exp).info.run_id
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(backends, "MLFLOW_WRITTEN_FOR", ("3.99",))
        for step in range(3):                              # three loggers, one line
            logger = MetricLogger(store, run_id, flush_every_s=0, fast_uri=store.uri)
            assert logger._writer is None
            logger.log({"loss.x": float(step)}, step, timestamp_ms=1_000)
            logger.close()
        for _ in range(2):
            assert backends.ledger_rows(store.uri, exp, LEDGER_TAGS) is None
            public_ledger = Ledger(store, exp, "toy").load()
            public_frame = query.runs_frame("toy", tracking_uri=store.uri, backend="sql", task_runs_only=False)
    assert [m.value for m in store.get_metric_history(run_id, "loss.x")] == [0.0, 1.0, 2.0]
    (line,) = _lines(caplog, "metric_writer")
    assert f"MLflow {backends.installed_version('mlflow')} is installed" in line and "3.99.x" in line
    assert "using MlflowClient.log_batch instead" in line
    assert len(_lines(caplog, "ledger")) == 1 and len(_lines(caplog, "runs")) == 1
    assert len(_lines(caplog, "latest")) == 1  # the public search path itself avoids _metric_objs
    assert len([r for r in caplog.records if r.name == "labrun"]) == 4
    # the versions fit again: the fast paths read what the public API read
    assert backends.ledger_rows(store.uri, exp, LEDGER_TAGS) is not None
    fast_ledger = Ledger(store, exp, "toy").load()
    assert {fp: sorted((a.run_id, a.status) for a in st.attempts) for fp, st in fast_ledger.states.items()} == \
        {fp: sorted((a.run_id, a.status) for a in st.attempts) for fp, st in public_ledger.states.items()}
    pd.testing.assert_frame_equal(
        query.runs_frame("toy", tracking_uri=store.uri, backend="sql", task_runs_only=False), public_frame)


def test_optuna_version_mismatch_uses_storage_lookup_with_one_line(tmp_path, monkeypatch, caplog):
    import optuna

    storage = f"sqlite:///{tmp_path}/optuna.db"
    optuna.create_study(study_name="first", storage=storage).optimize(lambda t: t.suggest_float("x", 0, 1),
                                                                       n_trials=3)
    study = optuna.create_study(study_name="second", storage=storage)
    trials = [study.ask() for _ in range(2)]
    fast = [backends.trial_id(t, storage=storage, study_name="second") for t in trials]
    assert fast == [t._trial_id for t in trials] and fast[0] > 3    # ids run over the whole storage
    assert [t.number for t in trials] == [0, 1]
    assert not _lines(caplog, "trial_id")

    monkeypatch.setattr(backends, "OPTUNA_WRITTEN_FOR", ("99",))
    public = [backends.trial_id(t, storage=storage) for t in trials]  # study name from the trial
    assert public == fast
    (line,) = _lines(caplog, "trial_id")
    assert f"Optuna {optuna.__version__} is installed" in line and "get_trial_id_from_study_id_trial_number" in line


# ----------------------------------------------------------------------------- both ways, same results

def test_public_api_only_switch_turns_every_fast_path_off(monkeypatch, caplog):
    monkeypatch.setenv("LABRUN_PUBLIC_API_ONLY", "1")
    caplog.set_level("INFO", logger="labrun")
    for _ in range(2):
        assert not any(backends.fast_path_available(k) for k in backends.FAST_PATHS)
    for kind in backends.FAST_PATHS:
        (line,) = _lines(caplog, kind)
        assert "LABRUN_PUBLIC_API_ONLY is set" in line
    assert {r.levelname for r in caplog.records if r.name == "labrun"} == {"INFO"}


def test_ledger_reads_the_same_attempts_both_ways(store, monkeypatch):
    from sweeps.ledger import LEDGER_TAGS, Ledger

    exp = store.create_experiment("toy")
    _populate(store, exp)

    def states():
        ledger = Ledger(store, exp, "toy").load()
        return {fp: sorted((a.run_id, a.status, a.start_time, a.stale,
                            {k: v for k, v in a.tags.items() if k in LEDGER_TAGS}) for a in st.attempts)
                for fp, st in ledger.states.items()}

    assert backends.ledger_rows(store.uri, exp, LEDGER_TAGS) is not None
    fast = states()
    monkeypatch.setenv("LABRUN_PUBLIC_API_ONLY", "1")
    assert backends.ledger_rows(store.uri, exp, LEDGER_TAGS) is None
    assert states() == fast
    assert sum(len(v) for v in fast.values()) == 5 and "fp-gone" not in fast


def test_runs_frame_is_the_same_both_ways(store, monkeypatch):
    import pandas as pd

    from analysis import query

    exp = store.create_experiment("toy")
    ids = _populate(store, exp)
    fast = query.runs_frame("toy", tracking_uri=store.uri, backend="sql", task_runs_only=False)
    raw = backends.read_runs(store.uri, [exp], None, tag_prefixes=("labrun.",))
    assert {r[0] for r in raw["runs"]} == set(ids) and set(raw) == {"runs", "tags", "params", "latest", "extrema"}
    monkeypatch.setenv("LABRUN_PUBLIC_API_ONLY", "1")
    calls = []
    real = query._read_search
    monkeypatch.setattr(query, "_read_search", lambda *a: calls.append(1) or real(*a))
    public = query.runs_frame("toy", tracking_uri=store.uri, backend="sql", task_runs_only=False)
    assert calls == [1]                                     # the public path did the reading
    pd.testing.assert_frame_equal(public, fast)
    row = fast.set_index("run_id").loc[ids[0]]
    # -inf was logged; MLflow stores it as -float max and analysis gives it back as -inf
    assert row["best.metric.mse.val"] == -float("inf") and row["final.metric.mse.val"] == 1.0
    assert fast.set_index("run_id").loc[ids[3], "parent_run_id"] == ids[0]


def test_curves_are_the_same_both_ways(store, monkeypatch):
    import pandas as pd

    from analysis import query

    exp = store.create_experiment("toy")
    ids = _populate(store, exp)
    keys = ["metric.mse.val", "loss.total"]
    assert backends.metric_histories(store.uri, ids, keys) is not None
    fast = query.curves_frame(ids, keys, tracking_uri=store.uri, backend="sql")
    assert len(fast) > 0
    monkeypatch.setenv("LABRUN_PUBLIC_API_ONLY", "1")
    assert backends.metric_histories(store.uri, ids, keys) is None
    public = query.curves_frame(ids, keys, tracking_uri=store.uri, backend="sql")
    pd.testing.assert_frame_equal(public, fast)


def test_study_user_attrs_are_read_fresh(tmp_path):
    import optuna

    from sweeps.study import optuna_attr

    storage = f"sqlite:///{tmp_path}/optuna.db"
    mine = optuna.create_study(study_name="s", storage=storage)
    assert optuna_attr(mine, "mlflow_parent_run_id") is None
    optuna.load_study(study_name="s", storage=storage).set_user_attr("mlflow_parent_run_id", "abc")
    assert optuna_attr(mine, "mlflow_parent_run_id") == "abc"   # another worker's write is seen


# ----------------------------------------------------------------------------- schema checks

def test_writer_needs_exact_columns_readers_a_superset(store, caplog):
    from sweeps.ledger import LEDGER_TAGS
    from tracking.metrics import MetricLogger

    exp = store.create_experiment("toy")
    _populate(store, exp)
    with sqlite3.connect(store.root / "mlflow.db") as con:     # a future MLflow adds a column
        con.execute("ALTER TABLE metrics ADD COLUMN dataset_uuid VARCHAR(36)")
    run_id = store.create_run(exp).info.run_id
    logger = MetricLogger(store, run_id, flush_every_s=0, fast_uri=store.uri)
    assert logger._writer is None
    logger.log({"loss.x": math.pi}, 0)
    logger.close()
    assert store.get_run(run_id).data.metrics["loss.x"] == math.pi
    (line,) = _lines(caplog, "metric_writer")
    assert "table 'metrics' differs from MLflow 3.17's, extra dataset_uuid" in line
    assert backends.ledger_rows(store.uri, exp, LEDGER_TAGS) is not None     # reads need only theirs
    assert backends.read_runs(store.uri, [exp], None, tag_prefixes=("labrun.",)) is not None
    assert not _lines(caplog, "ledger") and not _lines(caplog, "runs")


def test_missing_columns_or_tables_fall_back(tmp_path, caplog):
    db = tmp_path / "moved.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE runs (run_uuid, experiment_id, name, status, start_time, end_time, "
                    "lifecycle_stage)")
        con.execute("CREATE TABLE tags (key, val, run_uuid)")
    uri = f"sqlite:///{db}"
    assert backends.ledger_rows(uri, "0", ["labrun.task"]) is None
    assert backends.read_runs(uri, ["0"], None, tag_prefixes=("labrun.",)) is None
    assert backends.metric_writer(uri) is None
    assert "table 'tags' differs from MLflow 3.17's, missing value" in _lines(caplog, "ledger")[0]
    assert "cannot read the store's schema (NoSuchTableError" in _lines(caplog, "metric_writer")[0]
    assert len(_lines(caplog, "runs")) == 1
    assert backends.metric_writer("http://127.0.0.1:5000") is None      # a server: public, silently
    assert backends.ledger_rows("http://127.0.0.1:5000", "0", []) is None
    assert len([r for r in caplog.records if r.name == "labrun"]) == 3


# ----------------------------------------------------------------------------- PostgreSQL

def _pg_base():
    try:
        import psycopg2
    except ImportError:
        return None, None, "psycopg2 is not installed"
    reason = ""
    for user in ("postgres", "root"):
        try:
            conn = psycopg2.connect(host="127.0.0.1", port=5432, dbname="test", user=user, connect_timeout=3)
            conn.autocommit = True
            return conn, f"postgresql+psycopg2://{user}@127.0.0.1:5432/test", None
        except Exception as exc:  # noqa: BLE001
            reason = str(exc).strip().splitlines()[0]
    return None, None, f"no PostgreSQL server answers on 127.0.0.1:5432/test ({reason})"


@pytest.mark.postgres
def test_postgresql_fast_paths_match_the_public_api(tmp_path, monkeypatch):
    """MLflow's schema in a private PostgreSQL schema: every fast path against its fallback."""
    conn, base, reason = _pg_base()
    if conn is None:
        pytest.skip(reason)
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from analysis import query
    from sweeps.ledger import LEDGER_TAGS
    from tracking.metrics import MetricLogger

    monkeypatch.chdir(tmp_path)
    schema = f"labrun_test_{uuid.uuid4().hex[:8]}_backends"
    conn.cursor().execute(f"CREATE SCHEMA {schema}")
    try:
        uri = f"{base}?options=-csearch_path%3D{schema}"
        client = MlflowClient(tracking_uri=uri)
        exp = client.create_experiment("toy")
        _populate(client, exp)
        fast_run, public_run = client.create_run(exp).info.run_id, client.create_run(exp).info.run_id
        rows = [({"loss.a": 1.0, "loss.b": float("nan")}, 0), ({"loss.a": float("inf")}, 1),
                ({"loss.a": 0.25}, 1), ({"loss.a": 0.25}, 1)]

        def log(run_id, expect_fast):
            logger = MetricLogger(client, run_id, flush_every_s=0, fast_uri=uri)
            assert (logger._writer is not None) == expect_fast
            for i, (metrics, step) in enumerate(rows):
                logger.log(metrics, step, timestamp_ms=1_000 + min(i, 2))
            logger.close()

        def read(run_id):
            hist = {k: sorted((m.step, m.timestamp, "nan" if math.isnan(m.value) else m.value)
                              for m in client.get_metric_history(run_id, k)) for k in ("loss.a", "loss.b")}
            latest = {k: "nan" if math.isnan(v) else v for k, v in client.get_run(run_id).data.metrics.items()}
            return latest, hist

        log(fast_run, True)
        monkeypatch.setenv("LABRUN_PUBLIC_API_ONLY", "1")
        log(public_run, False)
        assert read(public_run) == read(fast_run)
        frame_public = query.runs_frame("toy", tracking_uri=uri, backend="sql", task_runs_only=False)
        monkeypatch.delenv("LABRUN_PUBLIC_API_ONLY")
        ledger_fast = backends.ledger_rows(uri, exp, LEDGER_TAGS)
        frame_fast = query.runs_frame("toy", tracking_uri=uri, backend="sql", task_runs_only=False)
        pd.testing.assert_frame_equal(frame_public, frame_fast)
        monkeypatch.setenv("LABRUN_PUBLIC_API_ONLY", "1")
        assert backends.ledger_rows(uri, exp, LEDGER_TAGS) is None
        from mlflow.entities import ViewType

        from sweeps.ledger import Ledger

        searched = Ledger(client, exp, "toy")._search_rows(ViewType)
        as_set = lambda rs: {(r, st, t.get("labrun.fingerprint")) for r, st, _, t in rs}  # noqa: E731
        assert as_set(ledger_fast) == as_set(searched) and len(as_set(searched)) == 5
    finally:
        conn.cursor().execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.close()


def test_project_entry_points_are_the_same_both_ways(monkeypatch):
    from tests.helpers import REPO

    folder = str(REPO / "examples" / "elasticnet")
    fast = backends.read_project(folder)
    monkeypatch.setenv("LABRUN_PUBLIC_API_ONLY", "1")
    public = backends.read_project(folder)
    assert public == fast and "main" in fast[2] and fast[2]["main"]
    with pytest.raises(ValueError, match="no MLproject"):
        backends.read_project(str(REPO / "examples"))


def test_generated_run_names_both_ways(monkeypatch):
    from tracking.naming import is_generated

    assert is_generated("classy-wolf-669") and not is_generated("toy-adam-3")
    monkeypatch.setenv("LABRUN_PUBLIC_API_ONLY", "1")
    assert is_generated("classy-wolf-669")        # the shape alone still recognises it
    assert not is_generated("toy-adam-s3") and not is_generated("ired-none-s0")
