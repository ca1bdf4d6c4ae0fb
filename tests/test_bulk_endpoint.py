"""``labrun server``'s bulk read endpoint (tracking/server_app.py, tracking/backends/bulk.py).

The fast tests check the wire format and the client's decisions (read, refuse in one line, or
fall back once) on canned answers, and that the app is registered for ``mlflow server``. The
slow ones start ``labrun server`` with logins on a throw-away PostgreSQL database (the fixture
of test_server_auth.py) and show that the endpoint gives the frame the public REST path gives
and that a user without READ on the experiment gets 403 from it, and from ``labrun analyze``
one line and exit 2. The fallback on a plain ``mlflow server`` is
test_analysis_query.py::test_tracking_server_over_http_agrees_with_sql.
"""
from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import pytest

from tests.helpers import PYTHON, run_cli
from tests.test_server_auth import _as, _env, _user, server  # noqa: F401  (server: a fixture)
from tracking import backends
from tracking.backends import bulk
from tracking.config import ConfigError
from tracking.exits import EXIT_CONFIG


pytestmark = pytest.mark.usefixtures("fast_paths_on")


def _fallbacks(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "labrun" and backends.FAST_PATHS["bulk"].what in r.getMessage()]


# --------------------------------------------------------------------------- without a server

def test_every_table_round_trips_through_arrow_with_nulls_nan_and_sqlite_booleans():
    tables = {
        "runs": [("r1", 3, "a", "FINISHED", 1_700_000_000_000, None), ("r2", 3, None, "RUNNING", None, None)],
        "tags": [("r1", "labrun.method", "adam"), ("r2", "mlflow.note.content", None)],
        "params": [],
        "latest": [("r1", "m", 1.5, 3, 0), ("r1", "n", math.nan, 2, 1), ("r2", "m", 1e308, 0, False)],
        "extrema": [("r1", "m", -1.0, 2.0)],
        "histories": [("r1", "m", 0, math.nan, 12), ("r1", "m", 1, 0.5, 13)],
    }
    back = bulk.decode(bulk.encode(tables))
    assert list(back) == list(tables)
    assert back["runs"] == tables["runs"] and back["tags"] == tables["tags"] and back["params"] == []
    assert [r[4] for r in back["latest"]] == [False, True, False]          # 0/1 from SQLite -> bool
    assert back["latest"][0][:4] == ("r1", "m", 1.5, 3) and math.isnan(back["latest"][1][2])
    assert back["extrema"] == tables["extrema"] and back["histories"][1] == ("r1", "m", 1, 0.5, 13)


def _resp(status: int, ours: bool, text: str = "", content: bytes = b""):
    return SimpleNamespace(status_code=status, headers={bulk.HEADER: "1"} if ours else {}, text=text,
                           content=content)


def test_the_client_refuses_in_one_line_or_falls_back_once(caplog):
    caplog.set_level(logging.INFO, logger="labrun")
    url = "http://127.0.0.1:5000"
    ok = bulk._answer("bulk", url, _resp(200, True, content=bulk.encode({"histories": []})), "experiment 'x'")
    assert ok == {"histories": []}
    with pytest.raises(ConfigError) as err:
        bulk._answer("bulk", url, _resp(403, True), "experiment 'x'")
    assert "may not READ experiment 'x' (HTTP 403)" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"refused the login \(HTTP 401\)"):
        bulk._answer("bulk", url, _resp(401, False), "experiment 'x'")
    assert _fallbacks(caplog) == []
    # a plain mlflow server: 404 (admin or no logins) or basic-auth's fail-closed 403 without our header
    for _ in range(3):
        assert bulk._answer("bulk", url, _resp(404, False), "experiment 'x'") is None
    assert bulk._answer("bulk", url, _resp(403, False), "experiment 'x'") is None
    lines = _fallbacks(caplog)
    assert len(lines) == 2 and "has no labrun bulk endpoint (HTTP 404" in lines[0], lines
    assert bulk._answer("bulk", url, _resp(bulk.OFF, True, text="schema differs"), "x") is None
    assert "the server's own SQL read is off (schema differs)" in _fallbacks(caplog)[-1]


def test_not_a_server_or_public_api_only_never_posts(monkeypatch):
    assert bulk.read_runs("sqlite:///x.db", ["1"], None, tag_prefixes=("",)) is None
    monkeypatch.setenv("LABRUN_PUBLIC_API_ONLY", "1")
    assert bulk.metric_histories("http://127.0.0.1:1", ["r"], ["m"]) is None   # port 1: never asked


def test_the_app_is_registered_for_mlflow_server(tmp_path):
    import importlib.metadata
    import tomllib

    from tests.helpers import REPO
    from tracking import server as srv

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["mlflow.app"]
    assert declared == {srv.APP_NAME: srv.APP_ENTRY_POINT}
    site = srv.register_app(tmp_path)
    (dist,) = importlib.metadata.distributions(path=[str(site)])
    assert [(e.group, e.name, e.value) for e in dist.entry_points] == [("mlflow.app", "labrun-auth",
                                                                         "tracking.server_app:create_app")]
    child = srv.server_environment(tmp_path / "auth.ini", {"PYTHONPATH": "/elsewhere"}, site=site)
    assert child["PYTHONPATH"].split(":") == [str(site), str(REPO), "/elsewhere"]


# --------------------------------------------------------------------------- a real labrun server

def _status(url: str, route: str, body: dict, auth: tuple[str, str] | None = None) -> tuple[int, bool]:
    """One raw POST (no client, no retries): its status, and whether labrun's header is on it."""
    import base64
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url + route, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.headers.get(bulk.HEADER) == "1"
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get(bulk.HEADER) == "1"


@pytest.fixture(scope="module")
def study(server):  # noqa: F811
    """A small study written straight into the server's database (default permission READ)."""
    from analysis import synthetic

    uri = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{server.db}"
    exp_id = synthetic.build_store(uri, "bulk_syn", 16, n_metrics=3, n_params=5, steps=3, failed_every=7)
    return SimpleNamespace(exp_id=exp_id, name="bulk_syn")


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(1800)
def test_the_bulk_endpoint_gives_the_public_paths_frame(server, study, caplog):  # noqa: F811
    import pandas as pd

    from analysis import query

    caplog.set_level(logging.INFO, logger="labrun")
    reader = _user(server, "fay")
    with _as(server, *reader):
        tables = bulk.read_runs(server.url, [study.exp_id], None, tag_prefixes=("",))
        assert tables is not None and len(tables["runs"]) == 16
        fast = query.runs_frame(study.name, tracking_uri=server.url)
        public = query.runs_frame(study.name, tracking_uri=server.url, backend="search")
        ids = list(fast["run_id"][:4])
        curves = query.curves_frame(ids, ["metric.acc", "metric.m00.val"], tracking_uri=server.url)
        public_curves = query.curves_frame(ids, ["metric.acc", "metric.m00.val"], tracking_uri=server.url,
                                           backend="search")
    assert _fallbacks(caplog) == []                 # the endpoint answered every time
    assert len(fast) == 16 and fast["best.metric.acc"].notna().all()
    pd.testing.assert_frame_equal(fast, public)
    assert len(curves) == 4 * 2 * 3
    pd.testing.assert_frame_equal(curves, public_curves)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(1800)
def test_a_user_without_read_gets_403_from_the_endpoint_and_one_line_from_analyze(server, study, tmp_path):  # noqa: F811
    from tracking.server import grant

    denied, reader = _user(server, "gus"), _user(server, "hal")
    grant(server.url, study.exp_id, "gus", "DENY", admin=server.admin)
    body = {"experiment_ids": [study.exp_id], "metric_keys": None, "tag_prefixes": [""]}
    with _as(server, *reader) as client:
        run_ids = [r.info.run_id for r in client.search_runs([study.exp_id], max_results=3)]
    histories = {"run_ids": run_ids, "keys": ["metric.acc"]}
    for route, payload in ((bulk.RUNS_ROUTE, body), (bulk.HISTORIES_ROUTE, histories)):
        assert _status(server.url, route, payload, auth=denied) == (403, True)
        assert _status(server.url, route, payload)[0] == 401
        assert _status(server.url, route, payload, auth=("gus", "wrong-password!"))[0] == 401
        assert _status(server.url, route, payload, auth=reader) == (200, True)
        assert _status(server.url, route, payload, auth=server.admin) == (200, True)
    with _as(server, *denied), pytest.raises(ConfigError, match=r"may not READ experiment 'bulk_syn' \(HTTP 403\)"):
        bulk.read_runs(server.url, [study.exp_id], None, tag_prefixes=("",), label="experiment 'bulk_syn'")
    proc = run_cli([PYTHON, "-m", "labrun", "analyze", "--experiment", study.name, "--metric", "metric.acc",
                    "--no-curves"], env_extra=_env(*denied, MLFLOW_TRACKING_URI=server.url), cwd=tmp_path,
                   timeout=600)
    assert proc.returncode == EXIT_CONFIG, proc.stdout + proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1 and "may not READ experiment 'bulk_syn' (HTTP 403)" in err, err
