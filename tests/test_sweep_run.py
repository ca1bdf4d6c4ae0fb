"""Sweeps end to end in real subprocesses: retries, stale runs, resume, SIGINT and SIGKILL."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter

import pytest

from tests.helpers import PYTHON, REPO, all_runs, run_cli


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(MLFLOW_DISABLE_TELEMETRY="true", WANDB_MODE="disabled", LABRUN_PROGRESS="0")
    return env


def _write(tmp_path, text, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _children(client, parent_id=None):
    runs = [r for r in all_runs(client) if r.data.tags.get("labrun.task") == "toy"]
    if parent_id:
        runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
    return runs


def _parents(client):
    return [r for r in all_runs(client) if r.data.tags.get("labrun.kind") == "sweep"]


def _wait(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _has_checkpoint(client, run):
    try:
        return bool(client.list_artifacts(run.info.run_id, "checkpoints"))
    except Exception:  # noqa: BLE001
        return False


@pytest.mark.slow
def test_interrupted_sweep_resumes_retries_failures_and_reruns_stale(store, tmp_path, capsys):
    """Cells A, B run fine, C raises at step 3; A also has a stale RUNNING run left by a dead
    launcher. Ctrl-C the sweep mid-way, run it again: A and B end FINISHED exactly once (a
    killed one resuming from its checkpoint), C is retried once (resuming) and reported failed,
    the stale run is closed as KILLED and every attempt hangs under one parent run."""
    from sweeps.matrix import expand
    from sweeps.spec import SweepSpec, load_spec
    from tracking.tasks import load_task

    path = _write(tmp_path, """
        entry: toy
        name: interrupted
        config: quick
        overrides: {train.steps: 6, train.eval_every: 2, checkpoint.every: 2, train.sleep_s: 0.5}
        zip:
          - {train.optimizer: [adam, sgd, adam], train.fail_at_step: [null, null, 3]}
        seeds: [0]
        retries: 1
        parallel: 2
    """)
    spec, _ = load_spec(SweepSpec, path)
    a, b, c = expand(spec, load_task("toy").schema)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    exp = store.create_experiment("toy")
    stale = store.create_run(exp, tags={"labrun.task": "toy", "labrun.fingerprint": a.fingerprint,
                                        "labrun.host": socket.gethostname(),
                                        "labrun.pid": str(dead.pid)}).info.run_id
    cmd = [PYTHON, "-m", "labrun", "sweep", str(path)]
    log = open(tmp_path / "sweep.log", "w")

    # 1) Ctrl-C once a healthy cell has saved a checkpoint
    proc = subprocess.Popen(cmd, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    _wait(lambda: any(r.info.status == "RUNNING" and r.data.params.get("train.fail_at_step") == "None"
                      and _has_checkpoint(store, r) for r in _children(store)), 180,
          "a running healthy cell with a checkpoint")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(90) == 130, (tmp_path / "sweep.log").read_text()
    runs = _children(store)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert store.get_run(stale).info.status == "KILLED"
    assert "stale" in store.get_run(stale).data.tags["labrun.failure"]
    killed = [r for r in runs if r.info.status == "KILLED" and r.info.run_id != stale]
    assert killed and all(r.data.tags["labrun.failure"].startswith("Interrupted") for r in killed)
    (parent,) = _parents(store)
    assert parent.info.status == "KILLED"

    # 2) the same command finishes the rest
    proc = run_cli(cmd, env_extra=_env(), timeout=240)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "2/3 cells FINISHED" in proc.stdout
    runs = _children(store)
    by_fp = {cell.fingerprint: [r for r in runs if r.data.tags["labrun.fingerprint"] == cell.fingerprint]
             for cell in (a, b, c)}
    for cell in (a, b):
        assert [r.info.status for r in by_fp[cell.fingerprint]].count("FINISHED") == 1
    # the healthy cell killed by Ctrl-C continued from its checkpoint, not from step 1
    resumed = [r for r in runs if r.info.status == "FINISHED" and r.data.tags.get("labrun.resumed_from")]
    assert resumed and {r.data.tags["labrun.resumed_from"] for r in resumed} <= {k.info.run_id for k in killed}
    failed = sorted((r for r in by_fp[c.fingerprint] if r.info.status == "FAILED"),
                    key=lambda r: r.info.start_time)
    assert len(failed) == 2, [(r.info.status, r.data.tags.get("labrun.failure")) for r in by_fp[c.fingerprint]]
    assert "injected failure at step 3" in failed[0].data.tags["labrun.failure"]
    assert failed[1].data.tags.get("labrun.resumed_from")      # the retry resumed too
    (parent,) = _parents(store)
    for r in runs:
        if r.info.run_id != stale:
            assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
            assert r.data.tags["labrun.sweep"] == "interrupted"
    assert parent.info.status == "FAILED" and parent.data.metrics["sweep.done_total"] == 2
    assert {"sweep.yaml", "cells.md"} <= {x.path for x in store.list_artifacts(parent.info.run_id)}

    # 3) planning once more: finished cells are skipped, the failed one has used its retries
    from sweeps.sweep import run_sweep

    spec, raw = load_spec(SweepSpec, path)
    assert run_sweep(spec, raw, dry_run=True) == 0
    out = capsys.readouterr().out
    assert "2 done" in out and "1 exhausted" in out and "failed 2x > retries=1" in out


@pytest.mark.slow
def test_sigkilled_launcher_leaves_no_orphans_and_the_rerun_finishes(store, tmp_path):
    path = _write(tmp_path, """
        entry: toy
        name: sigkill
        config: quick
        overrides: {train.steps: 8, train.eval_every: 2, checkpoint.every: 2, train.sleep_s: 0.5}
        matrix: {train.optimizer: [adam, sgd]}
        seeds: [0, 1]
        parallel: 2
    """)
    cmd = [PYTHON, "-m", "labrun", "sweep", str(path)]
    log = open(tmp_path / "sweep.log", "w")
    proc = subprocess.Popen(cmd, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    _wait(lambda: any(r.info.status == "RUNNING" and _has_checkpoint(store, r) for r in _children(store)),
          180, "a running cell with a checkpoint")
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    # its cells die with it (PR_SET_PDEATHSIG): they end KILLED instead of running on
    _wait(lambda: all(r.info.status != "RUNNING" for r in _children(store)), 60,
          "the killed launcher's cells to stop")
    assert any(r.info.status == "KILLED" for r in _children(store))

    proc = run_cli(cmd, env_extra=_env(), timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    runs = _children(store)
    finished = Counter(r.data.tags["labrun.fingerprint"] for r in runs if r.info.status == "FINISHED")
    assert len(finished) == 4 and set(finished.values()) == {1}, finished
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert any(r.data.tags.get("labrun.resumed_from") for r in runs if r.info.status == "FINISHED")
    (parent,) = _parents(store)
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    assert parent.info.status == "FINISHED" and parent.data.metrics["sweep.done_total"] == 4


@pytest.mark.slow
def test_mlflow_launcher_runs_cells_through_mlflow_run(store, tmp_path):
    path = _write(tmp_path, """
        entry: toy
        name: via_mlflow
        config: quick
        overrides: {train.steps: 3, train.eval_every: 3, checkpoint.every: 0}
        seeds: [5]
        launcher: mlflow
    """)
    proc = run_cli([PYTHON, "-m", "labrun", "sweep", str(path)], env_extra=_env(), timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (parent,) = _parents(store)
    (run,) = _children(store)
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert run.data.tags["mlflow.project.entryPoint"] == "toy"
    assert run.data.tags["labrun.seed"] == "5" and run.data.params["train.steps"] == "3"


@pytest.mark.slow
def test_submitit_launcher_with_the_local_executor(store, tmp_path):
    path = _write(tmp_path, f"""
        entry: toy
        name: via_submitit
        config: quick
        overrides: {{train.steps: 3, train.eval_every: 3, checkpoint.every: 0}}
        seeds: [0, 1]
        parallel: 2
        launcher: submitit
        submitit: {{folder: {tmp_path}/submitit, cluster: local}}
    """)
    proc = run_cli([PYTHON, "-m", "labrun", "sweep", str(path)], env_extra=_env(), timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (parent,) = _parents(store)
    runs = _children(store)
    assert sorted(r.data.tags["labrun.seed"] for r in runs) == ["0", "1"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    assert list((tmp_path / "submitit").glob("*_log.out"))


@pytest.mark.slow
def test_sweep_entry_point_under_mlflow_run_adopts_the_run(store, tmp_path):
    path = _write(tmp_path, """
        entry: toy
        name: adopted
        config: quick
        overrides: {train.steps: 3, train.eval_every: 3, checkpoint.every: 0}
        seeds: [0, 1]
        parallel: 2
    """)
    proc = run_cli([PYTHON, "-m", "mlflow", "run", str(REPO), "-e", "sweep", "-P", f"spec={path}",
                    "--env-manager", "local", "--experiment-name", "adopted"],
                   env_extra=_env(), cwd=tmp_path, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (parent,) = _parents(store)
    assert parent.data.tags["mlflow.project.entryPoint"] == "sweep"
    assert parent.info.status == "FINISHED"
    runs = _children(store)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}
    assert {r.info.experiment_id for r in runs} == {parent.info.experiment_id}


@pytest.mark.slow
def test_cell_running_elsewhere_is_waited_for_not_duplicated(store, tmp_path):
    """A live RUNNING run of a cell (another launcher's) is waited for; when its process dies
    without finishing, the sweep runs the cell itself."""
    from sweeps.matrix import expand
    from sweeps.spec import SweepSpec, load_spec
    from tracking.tasks import load_task

    path = _write(tmp_path, """
        entry: toy
        name: elsewhere
        config: quick
        overrides: {train.steps: 3, train.eval_every: 3, checkpoint.every: 0}
        seeds: [0]
    """)
    spec, _ = load_spec(SweepSpec, path)
    (cell,) = expand(spec, load_task("toy").schema)
    t_other = time.time()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(45)"])
    # reap it when it ends: an unreaped child is a zombie, and a zombie's pid still answers
    import threading

    threading.Thread(target=other.wait, daemon=True).start()
    exp = store.create_experiment("toy")
    theirs = store.create_run(exp, tags={"labrun.task": "toy", "labrun.fingerprint": cell.fingerprint,
                                         "labrun.host": socket.gethostname(),
                                         "labrun.pid": str(other.pid)}).info.run_id
    try:
        proc = run_cli([PYTHON, "-m", "labrun", "sweep", str(path)], env_extra=_env(), timeout=300)
    finally:
        other.kill()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert store.get_run(theirs).info.status == "KILLED"  # closed as stale once its process was gone
    (mine,) = [r for r in _children(store) if r.info.run_id != theirs]
    assert mine.info.status == "FINISHED"
    # it started only once the other process had gone (the sweep alone starts in ~15 s)
    assert mine.info.start_time / 1000 >= t_other + 44


@pytest.mark.slow
def test_in_process_sweeps_on_two_stores_send_each_cell_to_its_own(store, tmp_path, monkeypatch, _template_db):
    """The local launcher forks cells from a fork server that keeps the environment it started
    with; a cell must get the launcher's current one (here: a second sweep in the same Python
    process on another store, as a notebook or the chaos suite's in-process rerun does)."""
    import shutil

    from mlflow.tracking import MlflowClient

    from labrun.cli import main

    spec = _write(tmp_path, """
        entry: toy
        name: two-stores
        config: quick
        overrides: {train.steps: 3, train.eval_every: 3, checkpoint.every: 0}
        seeds: [0]
    """)

    def sweep() -> int:
        try:
            return int(main(["sweep", str(spec)]) or 0)
        except SystemExit as exc:
            return int(exc.code or 0)

    assert sweep() == 0
    (first,) = _children(store)
    assert first.info.status == "FINISHED"
    other = tmp_path / "other"
    other.mkdir()
    shutil.copyfile(_template_db, other / "mlflow.db")
    uri = f"sqlite:///{other}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert sweep() == 0
    (second,) = _children(MlflowClient(tracking_uri=uri))
    assert second.info.status == "FINISHED"
    assert [r.info.run_id for r in _children(store)] == [first.info.run_id]   # nothing landed in the first
