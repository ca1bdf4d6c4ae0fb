"""Optuna studies: pruning from inside a run, two workers sharing a study (SQLite and
PostgreSQL), and the Optuna dashboard serving the study on 127.0.0.1."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import textwrap
import time
import urllib.request
import uuid
from collections import Counter

import pytest

from tests.helpers import PYTHON, REPO, all_runs

PG_HOST, PG_PORT, PG_DB = "127.0.0.1", 5432, "test"


def _env(extra=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(MLFLOW_DISABLE_TELEMETRY="true", WANDB_MODE="disabled", LABRUN_PROGRESS="0")
    env.update(extra or {})
    return env


def _study_spec(tmp_path, name, storage, experiment, n_trials=4):
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(f"""
        entry: toy
        name: {name}
        experiment: {experiment}
        config: quick
        overrides: {{train.steps: 4, train.eval_every: 2, checkpoint.every: 0}}
        space:
          train.lr: {{type: float, low: 0.001, high: 0.3, log: true}}
          model.hidden: {{type: int, low: 4, high: 32}}
        objective: {{metric: metric.mse.val, direction: minimize}}
        seeds: [0]
        n_trials: {n_trials}
        pruner: {{type: median, n_startup_trials: 2}}
        storage: {storage}
    """))
    return path


# --------------------------------------------------------------------------- pruning

def test_pruning_observer_reports_and_prunes(tmp_path, monkeypatch):
    import optuna

    from sweeps.pruning import from_environment, pruning_env
    from tracking import Pruned
    from tracking.backends import trial_id

    storage = f"sqlite:///{tmp_path}/o.db"
    pruner = {"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0}
    study = optuna.create_study(study_name="p", storage=storage,
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    first = study.ask()
    first.report(2.0, 2)
    first.report(0.1, 4)
    study.tell(first, 0.1)
    trial = study.ask()
    for k, v in pruning_env(storage, "p", trial_id(trial, storage=storage, study_name="p"), "metric.mse.val",
                            pruner).items():
        monkeypatch.setenv(k, v)
    obs = from_environment()
    obs.metrics(None, {"loss.total": 3.0}, 1)               # other metrics are ignored
    obs.metrics(None, {"metric.mse.val": 1.5}, 2)           # better than the median: goes on
    with pytest.raises(Pruned, match="metric.mse.val=50"):
        obs.metrics(None, {"metric.mse.val": 50.0}, 4)      # worse: pruned
    stored = optuna.load_study(study_name="p", storage=storage).trials[1]
    assert stored.intermediate_values == {2: 1.5, 4: 50.0}


def test_pruned_task_ends_killed_with_exit_3(store, tmp_path, monkeypatch):
    import optuna

    from sweeps.pruning import pruning_env
    from tracking.backends import trial_id
    from tracking.tasks import load_task

    storage = f"sqlite:///{tmp_path}/o.db"
    study = optuna.create_study(study_name="p", storage=storage,
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    first = study.ask()
    for step in range(1, 7):
        first.report(1e-6, step)
    study.tell(first, 1e-6)
    trial = study.ask()
    env = pruning_env(storage, "p", trial_id(trial, storage=storage, study_name="p"), "metric.mse.val",
                      {"type": "median", "n_startup_trials": 1})
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    main = load_task("toy").main
    with pytest.raises(SystemExit) as exit_:
        main(["--config", "quick", "--set", "train.steps=6", "--set", "train.eval_every=2",
              "--set", "checkpoint.every=0"])
    assert exit_.value.code == 3
    (run,) = all_runs(store, ["toy"])
    assert run.info.status == "KILLED" and run.data.tags["labrun.pruned"] == "true"
    assert run.data.tags["labrun.pruner"] == "median"
    assert list(optuna.load_study(study_name="p", storage=storage).trials[1].intermediate_values) == [2]


# --------------------------------------------------------------------------- two workers

def _two_workers(tmp_path, storage, tracking_uri, name, experiment, n_trials=4):
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    spec = _study_spec(tmp_path, name, storage, experiment, n_trials)
    env = _env({"MLFLOW_TRACKING_URI": tracking_uri})
    logs = [open(tmp_path / f"worker{i}.log", "w") for i in range(2)]
    procs = [subprocess.Popen([PYTHON, "-m", "labrun", "optimize", str(spec)], env=env, cwd=tmp_path,
                              stdout=logs[i], stderr=subprocess.STDOUT) for i in range(2)]
    codes = [p.wait(400) for p in procs]
    text = "\n".join((tmp_path / f"worker{i}.log").read_text() for i in range(2))
    assert codes == [0, 0], text

    study = optuna.load_study(study_name=name, storage=storage)
    counted = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(counted) == n_trials, [(t.number, t.state.name) for t in study.trials]
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    ids = [rid for t in counted for rid in t.user_attrs["mlflow_run_ids"]]
    assert all(len(t.user_attrs["mlflow_run_ids"]) == 1 for t in counted)  # one seed per trial
    assert len(set(ids)) == len(ids) == n_trials                             # no trial ran twice

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    children = [r for r in runs if "optuna.trial" in r.data.tags]
    per_trial = Counter(r.data.tags["optuna.trial"] for r in children)
    assert set(per_trial.values()) == {1}, per_trial
    parent = study.user_attrs["mlflow_parent_run_id"]
    by_id = {r.info.run_id: r for r in children}
    for t in counted:
        run = by_id[t.user_attrs["mlflow_run_ids"][0]]
        assert run.data.tags["optuna.trial"] == str(t.number)
        assert run.data.tags["optuna.study"] == name
        assert run.data.tags["mlflow.parentRunId"] == parent
        assert float(run.data.params["train.lr"]) == pytest.approx(t.params["train.lr"])
        assert int(run.data.params["model.hidden"]) == t.params["model.hidden"]
        if t.state == TrialState.COMPLETE:
            assert run.info.status == "FINISHED"
            assert run.data.metrics["metric.mse.val"] == pytest.approx(t.value)
        else:
            assert run.data.tags["labrun.pruned"] == "true"
    parents = [r for r in runs if r.data.tags.get("labrun.kind") == "study"]
    assert [p.info.run_id for p in parents] == [parent]
    return study


def test_two_workers_share_a_study_on_sqlite(store, tmp_path):
    _two_workers(tmp_path, f"sqlite:///{tmp_path}/optuna.db", store.uri, "twoworkers", "toy_opt")


def _pg_url():
    try:
        import psycopg2
    except ImportError:
        return None, "psycopg2 is not installed"
    for user in ("root", "postgres"):
        try:
            psycopg2.connect(host=PG_HOST, port=PG_PORT, dbname=PG_DB, user=user, connect_timeout=3).close()
            return f"postgresql+psycopg2://{user}@{PG_HOST}:{PG_PORT}/{PG_DB}", None
        except Exception as exc:  # noqa: BLE001
            reason = str(exc).strip().splitlines()[0]
    return None, f"no PostgreSQL server answers on {PG_HOST}:{PG_PORT}/{PG_DB} ({reason})"


@pytest.mark.postgres
@pytest.mark.slow
def test_two_workers_share_a_study_on_postgresql(tmp_path, monkeypatch):
    """MLflow store and Optuna storage both on the server, each in a private schema of the
    shared database (both keep an alembic_version table, so they cannot share one schema)."""
    base, reason = _pg_url()
    if base is None:
        pytest.skip(reason)
    import psycopg2

    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root ./mlruns lands in the temp dir
    tag = uuid.uuid4().hex[:8]
    schemas = {"ml": f"labrun_test_{tag}_mlflow", "op": f"labrun_test_{tag}_optuna"}
    user = base.split("://", 1)[1].split("@", 1)[0]
    conn = psycopg2.connect(host=PG_HOST, port=PG_PORT, dbname=PG_DB, user=user)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for schema in schemas.values():
                cur.execute(f"CREATE SCHEMA {schema}")
        url = {k: f"{base}?options=-csearch_path%3D{v}" for k, v in schemas.items()}
        _two_workers(tmp_path, url["op"], url["ml"], f"pg_{tag}", f"pg_{tag}")
    finally:
        with conn.cursor() as cur:
            for schema in schemas.values():
                cur.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.close()


# --------------------------------------------------------------------------- dashboard

def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_optuna_dashboard_serves_the_study(tmp_path):
    import shutil

    import optuna

    storage = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="dash_study", storage=storage)
    study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=3)
    exe = shutil.which("optuna-dashboard") or os.path.join(os.path.dirname(PYTHON), "optuna-dashboard")
    port = _free_port()
    proc = subprocess.Popen([exe, storage, "--host", "127.0.0.1", "--port", str(port),
                             "--server", "wsgiref"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=_env())
    try:
        base = f"http://127.0.0.1:{port}"
        deadline, studies = time.time() + 60, None
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{base}/api/studies", timeout=5) as resp:
                    studies = json.loads(resp.read())["study_summaries"]
                break
            except OSError:
                time.sleep(0.5)
        assert studies is not None, "optuna-dashboard did not answer"
        (entry,) = [s for s in studies if s["study_name"] == "dash_study"]
        with urllib.request.urlopen(f"{base}/api/studies/{entry['study_id']}", timeout=10) as resp:
            detail = json.loads(resp.read())
        assert detail["name"] == "dash_study" and len(detail["trials"]) == 3
        with urllib.request.urlopen(f"{base}/dashboard/studies/{entry['study_id']}", timeout=10) as resp:
            assert resp.status == 200 and b"<html" in resp.read().lower()
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.slow
def test_killed_worker_trial_is_failed_by_heartbeat_and_retried(store, tmp_path):
    import signal

    import optuna
    from optuna.trial import TrialState

    storage = f"sqlite:///{tmp_path}/optuna.db"
    spec = tmp_path / "hb.yaml"
    spec.write_text(textwrap.dedent(f"""
        entry: toy
        name: heartbeat
        config: quick
        overrides: {{train.steps: 8, train.eval_every: 2, checkpoint.every: 0, train.sleep_s: 0.5}}
        space: {{train.lr: {{type: float, low: 0.001, high: 0.3, log: true}}}}
        objective: {{metric: metric.mse.val}}
        n_trials: 2
        pruner: {{type: none}}
        heartbeat_s: 1
        storage: {storage}
    """))
    cmd = [PYTHON, "-m", "labrun", "optimize", str(spec)]
    first = subprocess.Popen(cmd, env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline:
        runs = [r for r in all_runs(store) if r.data.tags.get("optuna.trial") == "0"]
        if runs and store.get_metric_history(runs[0].info.run_id, "loss.total"):
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the first worker never started trial 0")
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    time.sleep(3)  # past the 2 s grace period: trial 0's heartbeat is stale
    second = subprocess.run(cmd, env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr

    trials = optuna.load_study(study_name="heartbeat", storage=storage).trials
    assert trials[0].state == TrialState.FAIL
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == trials[0].params
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 2
    # the killed worker's run ended KILLED (its cell followed the worker), not RUNNING forever
    (orphan,) = [r for r in all_runs(store) if r.data.tags.get("optuna.trial") == "0"]
    assert orphan.info.status == "KILLED"


@pytest.mark.slow
def test_a_survivor_waits_for_a_killed_workers_trial_retries_it_and_records_no_surplus(store, tmp_path):
    """Two workers, one SIGKILLed (with its cell) mid-trial: the other does not exit with its
    share done; it waits, fails the stale trial, runs its retry, and leaves no FAIL behind for
    a budget it did not use."""
    import signal

    import optuna
    from optuna.trial import TrialState

    storage = f"sqlite:///{tmp_path}/optuna.db"
    spec = tmp_path / "survivor.yaml"
    spec.write_text(textwrap.dedent(f"""
        entry: toy
        name: survivor
        config: quick
        overrides: {{train.steps: 20, train.eval_every: 2, checkpoint.every: 0, train.sleep_s: 0.4}}
        space: {{train.lr: {{type: float, low: 0.001, high: 0.3, log: true}}}}
        objective: {{metric: metric.mse.val}}
        n_trials: 3
        pruner: {{type: none}}
        heartbeat_s: 1
        storage: {storage}
    """))
    cmd = [PYTHON, "-m", "labrun", "optimize", str(spec)]
    victim = subprocess.Popen(cmd, env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    # 20 steps of 0.4 s: trial 0 outlasts the wait for its first stored metric (flushed every
    # 2 s) plus the second before the kill, so the kill lands inside it on a quiet machine too
    deadline = time.time() + 180
    while time.time() < deadline:  # the victim is inside its first trial
        runs = [r for r in all_runs(store) if r.data.tags.get("optuna.trial") == "0"]
        if runs and store.get_metric_history(runs[0].info.run_id, "loss.total"):
            break
        time.sleep(0.3)
    else:
        raise AssertionError("the first worker never started trial 0")
    survivor = subprocess.Popen(cmd, env=_env(), cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    os.killpg(victim.pid, signal.SIGKILL)  # the worker and its cell, mid-trial
    victim.wait(30)
    out, _ = survivor.communicate(timeout=400)
    assert survivor.returncode == 0, out

    trials = optuna.load_study(study_name="survivor", storage=storage).trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    assert not [t for t in trials if t.user_attrs.get("labrun.surplus")]  # no trial for an unused budget
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.number for t in failed] == [0]
    assert [t.state for t in trials if t.system_attrs.get("failed_trial") == 0] == [TrialState.COMPLETE]
    runs = [r for r in all_runs(store) if r.data.tags.get("optuna.study") == "survivor"]
    assert not [r for r in runs if r.info.status == "RUNNING"]
    (killed,) = [r for r in runs if r.data.tags.get("optuna.trial") == "0"]
    assert killed.info.status == "KILLED"
