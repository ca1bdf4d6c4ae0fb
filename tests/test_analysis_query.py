"""runs_frame / curves_frame on real SQLite stores: the SQL and search_runs paths agree."""
from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest

from analysis import query, synthetic
from tracking.config import ConfigError


def _run(client, exp_id, *, method="adam", seed=0, status="FINISHED", lr="0.001", history=None,
         tags=None, task="toy"):
    from mlflow.entities import Metric, Param, RunTag

    run = client.create_run(exp_id, tags=tags or {})
    rid = run.info.run_id
    base = {} if task is None else {"labrun.task": task, "labrun.method": method, "labrun.seed": str(seed),
                                    "labrun.condition": "default", "labrun.group": f"g-{method}",
                                    "labrun.fingerprint": f"f-{method}-{seed}", "labrun.status": "exploratory",
                                    "labrun.heartbeat": "123"}
    params = {"train.lr": lr, "train.optimizer": method, "seed": str(seed)} if task else {}
    metrics = [Metric(k, v, 1_000 + s, s) for k, vals in (history or {}).items() for s, v in enumerate(vals)]
    client.log_batch(rid, metrics=metrics, params=[Param(k, v) for k, v in params.items()],
                     tags=[RunTag(k, v) for k, v in base.items()])
    client.set_terminated(rid, status)
    return rid


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """One experiment holding every kind of run analysis must keep or drop."""
    root = tmp_path_factory.mktemp("analysis_query")
    uri = synthetic.sqlite_store(root / "mlflow.db", tmp_path_factory.getbasetemp() / "analysis-template")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        exp = client.create_experiment("mixed")
        other = client.create_experiment("other")
        ids: dict[str, object] = {"task": []}
        sweep = _run(client, exp, task="toy", tags={"labrun.sweep": "spec.yaml"})
        for m, offset in (("adam", 0.0), ("sgd", 1.0)):
            for s in range(3):
                hist = {"metric.mse.val": [offset + 3.0, offset + 1.0 + s * 0.1, offset + 2.0],
                        "metric.acc": [0.1, 0.9 - offset * 0.5, 0.5], "loss.total": [5.0, 4.0, 3.0]}
                if m == "sgd" and s == 2:
                    hist["metric.mse.val"][1] = float("nan")
                lr = "1e-3" if (m, s) == ("adam", 0) else "0.001"   # `mlflow run -P` spelling vs labrun's
                tags = {"mlflow.parentRunId": sweep} if s == 0 else {}
                ids["task"].append(_run(client, exp, method=m, seed=s, lr=lr, history=hist, tags=tags))
        ids["failed"] = _run(client, exp, method="adam", seed=5, status="FAILED",
                             history={"metric.mse.val": [9.0]})
        ids["analysis"] = _run(client, exp, task=None, tags={"labrun.analysis": "metric.mse.val"},
                               history={"metric.mse.val": [0.0]})
        ids["notask"] = _run(client, exp, task=None, history={"metric.mse.val": [0.0]})
        ids["deleted"] = _run(client, exp, method="adam", seed=7, history={"metric.mse.val": [0.0]})
        client.delete_run(ids["deleted"])
        ids["other"] = _run(client, other, method="adam", seed=0, history={"metric.mse.val": [7.0]})
        ids["sweep"] = sweep
        ids["study"] = _run(client, exp, task="toy", tags={"labrun.kind": "study", "labrun.sweep": "s"})
        yield uri, client, ids


def test_sql_and_search_paths_give_the_same_frame(mixed):
    uri, _, _ = mixed
    a = query.runs_frame("mixed", tracking_uri=uri, backend="sql")
    b = query.runs_frame("mixed", tracking_uri=uri, backend="search")
    pd.testing.assert_frame_equal(a, b)
    assert query.backend_for(uri) == "sql" and query.backend_for("http://h:5000") == "bulk"
    assert query.backend_for("file:///tmp/mlruns") == "search"
    a2 = query.runs_frame("mixed", tracking_uri=uri, backend="sql", task_runs_only=False)
    b2 = query.runs_frame("mixed", tracking_uri=uri, backend="search", task_runs_only=False)
    pd.testing.assert_frame_equal(a2, b2)


def test_frame_keeps_task_runs_and_drops_the_rest(mixed):
    uri, _, ids = mixed
    f = query.runs_frame("mixed", tracking_uri=uri)
    assert set(f["run_id"]) == set(ids["task"]) | {ids["failed"]}
    everything = set(query.runs_frame("mixed", tracking_uri=uri, task_runs_only=False)["run_id"])
    assert {ids["analysis"], ids["notask"], ids["sweep"], ids["study"]} <= everything
    assert ids["deleted"] not in everything and ids["other"] not in everything
    both = query.runs_frame(["mixed", "other"], tracking_uri=uri)
    assert ids["other"] in set(both["run_id"]) and set(both["experiment"]) == {"mixed", "other"}


def test_frame_columns_values_and_types(mixed):
    uri, _, ids = mixed
    f = query.runs_frame("mixed", tracking_uri=uri).set_index("run_id")
    assert list(f.reset_index().columns[:9]) == query.BASE_COLUMNS
    assert "labrun.heartbeat" not in f.columns and "labrun.method" in f.columns
    assert f["labrun.seed"].dtype.kind == "i"
    assert f["params.train.lr"].dtype == "float64" and (f["params.train.lr"] == 0.001).all()
    assert f.loc[ids["task"][0], "parent_run_id"] == ids["sweep"]
    first = f.loc[ids["task"][1]]                         # adam seed 1
    assert first["final.metric.mse.val"] == pytest.approx(2.0)
    assert first["best.metric.mse.val"] == pytest.approx(1.1)      # min over the history
    assert first["best.metric.acc"] == pytest.approx(0.9)          # accuracy-like: max
    assert first["step.metric.mse.val"] == 2
    nan_run = f.loc[ids["task"][5]]    # sgd seed 2: 4.0, NaN, 3.0 (MLflow stores NaN as 0 + is_nan)
    assert nan_run["best.metric.mse.val"] == pytest.approx(3.0) and nan_run["final.metric.mse.val"] == 3.0
    assert f.loc[ids["failed"], "status"] == "FAILED" and math.isnan(f.loc[ids["failed"], "final.loss.total"])
    flipped = query.runs_frame("mixed", tracking_uri=uri, directions={"metric.mse.val": "max"})
    assert flipped.set_index("run_id").loc[ids["task"][1], "best.metric.mse.val"] == pytest.approx(3.0)


def test_curves_frame_paths_agree_and_keep_nan(mixed):
    uri, _, ids = mixed
    a = query.curves_frame(ids["task"], ["metric.mse.val", "loss.total"], tracking_uri=uri, backend="sql")
    b = query.curves_frame(ids["task"], ["metric.mse.val", "loss.total"], tracking_uri=uri, backend="search")
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 6 * 2 * 3 and a["value"].isna().sum() == 1
    assert list(a.columns) == ["run_id", "metric", "step", "value", "timestamp"]


def test_filters_and_column_names(mixed):
    uri, _, _ = mixed
    f = query.runs_frame("mixed", tracking_uri=uri)
    assert len(query.apply_filters(f, ["method=adam"])) == 4
    assert len(query.apply_filters(f, ["labrun.method=adam", "seed<2"])) == 2
    assert len(query.apply_filters(f, ["train.lr<=1e-3", "labrun.method!=adam"])) == 3
    assert query.resolve_column(f, "train.lr") == "params.train.lr"
    assert query.resolve_column(f, "seed") == "labrun.seed"
    with pytest.raises(ConfigError, match="unknown group key 'train.lrr'.*did you mean train.lr"):
        query.resolve_column(f, "train.lrr", what="group key")
    with pytest.raises(ConfigError, match="bad filter"):
        query.apply_filters(f, ["labrun.method~adam"])
    with pytest.raises(ConfigError, match="is numeric"):
        query.apply_filters(f, ["train.lr=fast"])
    with pytest.raises(ConfigError, match="no experiment named 'mixd'.*did you mean mixed"):
        query.runs_frame("mixd", tracking_uri=uri)


def test_runs_frame_returns_every_run_beyond_one_page(tmp_path, tmp_path_factory, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = synthetic.sqlite_store(tmp_path / "mlflow.db", tmp_path_factory.getbasetemp() / "analysis-template")
    synthetic.build_store(uri, "many", 1_050, n_metrics=2, n_params=4, failed_every=50)
    sql = query.runs_frame("many", tracking_uri=uri)
    assert len(sql) == 1_050 and sql["run_id"].is_unique
    assert (sql["status"] == "FAILED").sum() == 21
    search = query.runs_frame("many", tracking_uri=uri, backend="search", metrics=[])
    assert len(search) == 1_050 > query.PAGE_SIZE
    cols = ["run_id", "status", "labrun.seed", "params.train.lr", "final.metric.acc", "step.metric.acc"]
    pd.testing.assert_frame_equal(sql[cols], search[cols])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_tracking_server_over_http_agrees_with_sql(mixed, tmp_path, caplog):
    """A real ``mlflow server`` on 127.0.0.1: the REST paging path gives the SQL frame. A plain
    server has no labrun bulk endpoint: analysis falls back to the REST API, saying so once."""
    import logging

    caplog.set_level(logging.INFO, logger="labrun")
    uri, _, ids = mixed
    port = _free_port()
    env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    pytest.fail("mlflow server did not start")
                time.sleep(0.5)
        time.sleep(1.0)
        http = query.runs_frame("mixed", tracking_uri=url)
        sql = query.runs_frame("mixed", tracking_uri=uri)
        pd.testing.assert_frame_equal(http, sql)
        a = query.curves_frame(ids["task"], ["metric.mse.val"], tracking_uri=url)
        pd.testing.assert_frame_equal(a, query.curves_frame(ids["task"], ["metric.mse.val"], tracking_uri=uri))
        pd.testing.assert_frame_equal(query.runs_frame("mixed", tracking_uri=url), sql)
        fell_back = [r.getMessage() for r in caplog.records if "bulk read endpoint" in r.getMessage()]
        assert len(fell_back) == 1 and f"{url} has no labrun bulk endpoint (HTTP 404" in fell_back[0], fell_back
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.postgres
def test_postgresql_store_sql_and_search_paths_agree():
    """The bulk SQL reader on MLflow's schema in PostgreSQL (own throw-away database)."""
    import uuid

    psycopg2 = pytest.importorskip("psycopg2")
    try:
        admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test", connect_timeout=3)
    except Exception as exc:
        pytest.skip(f"no PostgreSQL server on 127.0.0.1:5432 ({exc})")
    admin.autocommit = True
    name = f"labrun_analysis_{uuid.uuid4().hex[:8]}"
    admin.cursor().execute(f"CREATE DATABASE {name}")
    try:
        uri = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
        synthetic.build_store(uri, "pg", 120, n_metrics=3, n_params=5, steps=2, failed_every=10)
        sql = query.runs_frame("pg", tracking_uri=uri)
        assert query.backend_for(uri) == "sql" and len(sql) == 120 and sql["best.metric.acc"].notna().all()
        pd.testing.assert_frame_equal(sql, query.runs_frame("pg", tracking_uri=uri, backend="search"))
        ids = list(sql["run_id"][:4])
        pd.testing.assert_frame_equal(query.curves_frame(ids, ["metric.acc"], tracking_uri=uri),
                                      query.curves_frame(ids, ["metric.acc"], tracking_uri=uri, backend="search"))
    finally:  # FORCE: MLflow keeps its own pooled connections to the database open
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()
