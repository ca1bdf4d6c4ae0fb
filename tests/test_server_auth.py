"""``labrun server``: a real MLflow server with logins on PostgreSQL, driven by real clients.

The fast tests check what is decided before a server exists (no default password, no secret on
the command line or in a readable file, 127.0.0.1 and the allowed hosts); the slow ones start
``labrun server`` on a throw-away PostgreSQL database and run a task, a sweep and an analysis
through it, and show that a missing or wrong login (401) and a login without permission on an
experiment (403) write nothing.
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from types import SimpleNamespace

import pytest

from tests.helpers import PYTHON, REPO, run_cli
from tracking.config import ConfigError
from tracking.exits import EXIT_CONFIG

PG = dict(host="127.0.0.1", port=5432, user="postgres")
ADMIN_PASSWORD = "admin-" + uuid.uuid4().hex  # never a fixed one, not even in a test


def _args(*argv: str):
    import argparse

    from tracking import server

    p = argparse.ArgumentParser()
    server.add_arguments(p)
    return p.parse_args(list(argv))


def _admin_conn():
    try:
        import psycopg2
    except ImportError:
        pytest.skip("psycopg2 is not installed")
    try:
        conn = psycopg2.connect(dbname="postgres", connect_timeout=3, **PG)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"no PostgreSQL server answers on 127.0.0.1:5432 ({str(exc).strip().splitlines()[0]})")
    conn.autocommit = True
    return conn


@pytest.fixture
def pg_database():
    """A fresh database on the local PostgreSQL server, dropped afterwards (FORCE: the server's
    pooled connections may outlive it)."""
    conn = _admin_conn()
    name = f"labrun_srv_{uuid.uuid4().hex[:10]}"
    yield name, f"postgresql+psycopg2://{PG['user']}@127.0.0.1:5432/{name}"
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    conn.close()


# --------------------------------------------------------------------------- before any server

def test_no_admin_password_is_a_one_line_error_and_starts_nothing(monkeypatch, capsys, tmp_path):
    from labrun.cli import main

    monkeypatch.delenv("LABRUN_ADMIN_PASSWORD", raising=False)
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "not-read-by-labrun-server")
    name = f"labrun_srv_never_{uuid.uuid4().hex[:8]}"
    uri = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    assert main(["server", "--backend-store-uri", uri, "--port", "1"]) == EXIT_CONFIG
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "no admin password: set $LABRUN_ADMIN_PASSWORD or give " \
        "--admin-password-file FILE" in err
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for argv, env_pw, expected in [
        (["--admin-password-file", str(tmp_path / "missing")], None, "cannot read it"),
        (["--admin-password-file", str(empty)], None, "no admin password"),
        ([], "short", "has 5 characters; it needs at least 12"),
    ]:
        if env_pw:
            monkeypatch.setenv("LABRUN_ADMIN_PASSWORD", env_pw)
        assert main(["server", "--backend-store-uri", uri, *argv]) == EXIT_CONFIG
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err
    try:
        conn = _admin_conn()
    except pytest.skip.Exception:
        return
    with conn.cursor() as cur:  # refused before anything touched the database server
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        assert cur.fetchone() is None
    conn.close()


@pytest.mark.parametrize("argv, expected", [
    (["--backend-store-uri", "sqlite:///mlflow.db"], "--backend-store-uri must be a PostgreSQL URI"),
    (["--host", "0.0.0.0"], "--host 0.0.0.0 listens on every interface: name the host names"),
    (["--host", "0.0.0.0", "--allowed-hosts", "*"], "--allowed-hosts must name the hosts"),
    (["--port", "70000"], "--port must be 0-65535"),
    (["--auth-cache-seconds", "-1"], "--auth-cache-seconds at least 0"),
])
def test_unsafe_or_wrong_settings_are_one_line_errors(argv, expected):
    from tracking import server

    with pytest.raises(ConfigError) as err:
        server.settings_from_args(_args(*argv))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_the_password_goes_only_into_a_private_ini(tmp_path, monkeypatch):
    from tracking import server

    pw_file = tmp_path / "admin.txt"
    pw_file.write_text("from-the-file-123\nsecond line ignored\n")
    monkeypatch.setenv("LABRUN_ADMIN_PASSWORD", "from-the-environment")
    assert server.admin_password(str(pw_file)) == "from-the-file-123"
    assert server.admin_password(None) == "from-the-environment"

    settings = server.settings_from_args(_args("--artifacts-destination", str(tmp_path / "art")))
    assert (settings.host, settings.url) == ("127.0.0.1", "http://127.0.0.1:5000")
    assert settings.allowed_hosts == ["127.0.0.1:5000", "localhost:5000"]
    ini = server.write_private(tmp_path, "auth.ini", server.auth_ini(settings, "from-the-file-123"))
    assert stat.S_IMODE(ini.stat().st_mode) == 0o600
    import configparser

    cfg = configparser.ConfigParser(interpolation=None)
    cfg.read(ini)
    assert dict(cfg["mlflow"]) == {
        "default_permission": "READ", "database_uri": server.DEFAULT_BACKEND, "admin_username": "admin",
        "admin_password": "from-the-file-123", "grant_default_workspace_access": "false",
        "auth_cache_ttl_seconds": "30",
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth"}

    cmd = server.server_command(settings)
    assert "from-the-file-123" not in " ".join(cmd) and "from-the-environment" not in " ".join(cmd)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--app-name") + 1] == "labrun-auth"
    assert cmd[cmd.index("--allowed-hosts") + 1] == "127.0.0.1:5000,localhost:5000"
    assert cmd[cmd.index("--artifacts-destination") + 1] == str(tmp_path / "art")
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", "stale")
    child = server.server_environment(ini)
    assert not {"LABRUN_ADMIN_PASSWORD", "MLFLOW_AUTH_ADMIN_PASSWORD"} & set(child)
    assert child["MLFLOW_AUTH_CONFIG_PATH"] == str(ini) and len(child["MLFLOW_FLASK_SERVER_SECRET_KEY"]) == 64
    remote = server.settings_from_args(_args("--host", "10.1.2.3", "--port", "5001"))
    assert remote.allowed_hosts == ["10.1.2.3:5001"]


@pytest.mark.postgres
def test_the_database_is_created_when_missing(pg_database):
    from tracking import server

    name, uri = pg_database
    assert server.ensure_database(uri) is True
    assert server.ensure_database(uri) is False
    with pytest.raises(ConfigError, match=r"cannot reach PostgreSQL for postgresql\+psycopg2://postgres@127.0.0.1:1/x"):
        server.ensure_database("postgresql+psycopg2://postgres@127.0.0.1:1/x")


# --------------------------------------------------------------------------- a real server

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http(url: str, path: str, body: dict | None = None, auth: tuple[str, str] | None = None,
          host: str | None = None) -> tuple[int, str]:
    """One raw REST call (no MLflow client, so no retries): its status and body."""
    req = urllib.request.Request(url + path, data=json.dumps(body).encode() if body is not None else None,
                                 method="POST" if body is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    if host:
        req.add_header("Host", host)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _env(user: str | None = None, password: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env.update(PYTHONPATH=str(REPO), MLFLOW_DISABLE_TELEMETRY="true", WANDB_MODE="disabled",
               LABRUN_PROGRESS="0", **extra)
    if user:
        env.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
    return env


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``labrun server`` in its own process group on a fresh database; stopped by that group."""
    conn = _admin_conn()
    db = f"labrun_srv_{uuid.uuid4().hex[:10]}"
    root = tmp_path_factory.mktemp("server")
    port = _free_port()
    log = open(root / "server.log", "w")
    cmd = [PYTHON, "-m", "labrun", "server", "--backend-store-uri",
           f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db}", "--artifacts-destination",
           str(root / "artifacts"), "--port", str(port), "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=_env(LABRUN_ADMIN_PASSWORD=ADMIN_PASSWORD))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300
        while _up(url) is False:
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"labrun server did not come up:\n{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(1)
        yield SimpleNamespace(url=url, admin=("admin", ADMIN_PASSWORD), root=root, db=db,
                              artifacts=root / "artifacts", proc=proc)
    finally:
        _stop_group(proc)
        log.close()
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        conn.close()


def _up(url: str) -> bool:
    try:
        return _http(url, "/health")[0] == 200
    except OSError:
        return False


def _stop_group(proc: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 60), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@contextlib.contextmanager
def _as(server, user: str, password: str):
    """An MlflowClient logged in as ``user`` (MLflow reads the login from the environment)."""
    from mlflow.tracking import MlflowClient

    from tracking.server import credentials

    with credentials(user, password):
        yield MlflowClient(tracking_uri=server.url)


def _user(server, name: str) -> tuple[str, str]:
    from tracking.server import create_user

    password = f"{name}-{uuid.uuid4().hex}"
    create_user(server.url, name, password, admin=server.admin)
    return name, password


def _written(server, *names: str) -> tuple[list[str], int, list[str]]:
    """What a refused client could have left: experiments of those names, their runs (read as
    the admin) and their artifact files. Only these: other tests' cells may still be writing."""
    with _as(server, *server.admin) as client:
        exps = [e for e in client.search_experiments() if e.name in names]
        runs = client.search_runs([e.experiment_id for e in exps], max_results=1000) if exps else []
    files = sorted(str(p) for e in exps for p in (server.artifacts / e.experiment_id).rglob("*"))
    return sorted(e.name for e in exps), len(runs), files


@pytest.mark.slow
@pytest.mark.timeout(3000)  # a real server, task, sweep and analysis on a shared 2-core machine
@pytest.mark.postgres
def test_a_user_runs_a_task_a_sweep_and_an_analysis_through_the_server(server, tmp_path):
    alice = _user(server, "alice")
    env = _env(*alice, MLFLOW_TRACKING_URI=server.url)
    proc = run_cli([PYTHON, "-m", "labrun", "run", "toy", "--config", "quick", "--set", "train.steps=4",
                    "--set", "train.eval_every=2", "--set", "checkpoint.every=2", "--experiment", "alice_toy"],
                   env_extra=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent("""
        entry: toy
        name: alice_sweep
        experiment: alice_sweep
        config: quick
        overrides: {train.steps: 4, train.eval_every: 2, checkpoint.every: 2}
        matrix: {train.optimizer: [adam, sgd]}
        seeds: [0, 1]
        parallel: 2
    """))  # two seeds a group: analysis refuses single-run groups
    proc = run_cli([PYTHON, "-m", "labrun", "sweep", str(spec)], env_extra=env, cwd=tmp_path, timeout=1500)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = run_cli([PYTHON, "-m", "labrun", "analyze", "--experiment", "alice_sweep", "--metric",
                    "metric.mse.val", "--no-curves"], env_extra=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "metric.mse.val" in proc.stdout and "adam" in proc.stdout and "sgd" in proc.stdout

    with _as(server, *alice) as client:
        task_exp, sweep_exp = (client.get_experiment_by_name(n) for n in ("alice_toy", "alice_sweep"))
        (task_run,) = client.search_runs([task_exp.experiment_id])
        runs = client.search_runs([sweep_exp.experiment_id], max_results=100)
        analysis_exp = client.get_experiment_by_name("alice_sweep · analysis")
        analysis_runs = client.search_runs([analysis_exp.experiment_id]) if analysis_exp else []
    assert task_run.info.status == "FINISHED" and task_run.info.artifact_uri.startswith("mlflow-artifacts:")
    cells = [r for r in runs if r.data.tags.get("labrun.task") == "toy"]
    assert len(cells) == 4 and {r.info.status for r in cells} == {"FINISHED"}
    assert any(r.data.tags.get("labrun.analysis") for r in analysis_runs)
    assert not any(r.data.tags.get("labrun.analysis") for r in runs)
    # served artifacts: the client never wrote a file; the server put them in its destination
    stored = {p.name for p in server.artifacts.rglob("*")}
    assert {"summary.json", "REPORT.md", "config.yaml", "train.log"} <= stored
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.slow
@pytest.mark.timeout(1800)  # real servers and clusters on a shared 2-core machine
@pytest.mark.postgres
def test_no_login_or_a_wrong_password_is_refused_with_401_and_writes_nothing(server, tmp_path):
    alice = _user(server, "carol")
    create = {"name": f"intruder_{uuid.uuid4().hex[:6]}"}
    assert _http(server.url, "/api/2.0/mlflow/experiments/create", create)[0] == 401
    assert _http(server.url, "/api/2.0/mlflow/experiments/create", create, auth=("carol", "wrong-password!"))[0] == 401
    assert _http(server.url, "/api/2.0/mlflow/experiments/create", create, auth=("nobody", alice[1]))[0] == 401
    # a Host header not in --allowed-hosts is refused even with a good login (DNS rebinding)
    assert _http(server.url, "/api/2.0/mlflow/experiments/create", create, auth=alice,
                 host="evil.example:80")[0] == 403
    for user in (None, ("carol", "wrong-password!")):
        env = _env(*(user or ()), MLFLOW_TRACKING_URI=server.url)
        proc = run_cli([PYTHON, "-m", "labrun", "run", "toy", "--config", "quick", "--set", "train.steps=2",
                        "--experiment", "intruders"], env_extra=env, cwd=tmp_path, timeout=600)
        assert proc.returncode != 0
        assert "401" in proc.stderr or "Unauthorized" in proc.stderr or "credentials" in proc.stderr, proc.stderr[-2000:]
    assert _written(server, create["name"], "intruders") == ([], 0, [])


@pytest.mark.slow
@pytest.mark.timeout(1800)  # real servers and clusters on a shared 2-core machine
@pytest.mark.postgres
def test_a_user_without_permission_cannot_write_to_an_experiment_403(server, tmp_path):
    from mlflow.exceptions import MlflowException

    from tracking.server import grant

    alice, bob = _user(server, "dave"), _user(server, "erin")
    exp_name = f"dave_{uuid.uuid4().hex[:6]}"
    with _as(server, *alice) as client:
        exp_id = client.create_experiment(exp_name)
        client.create_run(exp_id)
    before = _written(server, exp_name)
    assert before[:2] == ([exp_name], 1)
    status, body = _http(server.url, "/api/2.0/mlflow/runs/create", {"experiment_id": exp_id}, auth=bob)
    assert status == 403, body
    with _as(server, *bob) as client:
        assert len(client.search_runs([exp_id])) == 1      # READ (the default permission) reads
        with pytest.raises(MlflowException) as err:
            client.create_run(exp_id)
        assert err.value.get_http_status_code() == 403
    env = _env(*bob, MLFLOW_TRACKING_URI=server.url)
    proc = run_cli([PYTHON, "-m", "labrun", "run", "toy", "--config", "quick", "--set", "train.steps=2",
                    "--experiment", exp_name], env_extra=env, cwd=tmp_path, timeout=600)
    assert proc.returncode != 0, proc.stdout
    assert "403" in proc.stderr or "PERMISSION_DENIED" in proc.stderr, proc.stderr[-2000:]
    assert _written(server, exp_name) == before

    grant(server.url, exp_id, "erin", "EDIT", admin=server.admin)   # the admin lets erin in
    status, body = _http(server.url, "/api/2.0/mlflow/runs/create", {"experiment_id": exp_id}, auth=bob)
    assert status == 200, body


def test_a_taken_port_is_refused_before_anything_starts(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        proc = run_cli([PYTHON, "-m", "labrun", "server", "--port", str(port)], cwd=tmp_path, timeout=120,
                       env_extra={"LABRUN_ADMIN_PASSWORD": ADMIN_PASSWORD})
    assert proc.returncode == EXIT_CONFIG, proc.stderr
    assert proc.stderr.count("\n") == 1 and f"port {port} on 127.0.0.1 is in use by pid {os.getpid()}" in proc.stderr


@pytest.mark.postgres
@pytest.mark.slow
def test_sigterm_to_labrun_server_stops_its_whole_tree(tmp_path, pg_database):
    import psutil

    _, uri = pg_database
    port = _free_port()
    proc = subprocess.Popen([PYTHON, "-m", "labrun", "server", "--backend-store-uri", uri, "--port", str(port),
                             "--artifacts-destination", str(tmp_path / "art"), "--workers", "2"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=_env(LABRUN_ADMIN_PASSWORD=ADMIN_PASSWORD))
    try:
        deadline = time.time() + 300
        while not _up(f"http://127.0.0.1:{port}"):
            assert proc.poll() is None and time.time() < deadline, "labrun server did not come up"
            time.sleep(1)
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert len(tree) >= 2  # mlflow server and its workers
        proc.send_signal(signal.SIGTERM)  # to labrun only, not to a group
        proc.wait(timeout=90)
        _, alive = psutil.wait_procs(tree, timeout=30)
        assert alive == [], [p.cmdline() for p in alive]
        assert not _up(f"http://127.0.0.1:{port}")
    finally:
        if proc.poll() is None:
            _stop_group(proc)
