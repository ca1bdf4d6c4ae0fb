"""Off the happy path, in real processes: every fault a user meets ends in one clear line.

Each test here walks one case of the user-path issue as a user would: a real ``labrun`` (or
``python -m``) process, a real store, and the output a person would read.
"""
from __future__ import annotations

import shutil
import socket

import pytest

from tests.helpers import PYTHON, REPO, all_runs, one_line_exit_2 as _one_line_exit_2, run_cli

LABRUN = [PYTHON, "-m", "labrun"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed




@pytest.mark.parametrize("argv", [
    ["run", "toy", "--config", "quick"],
    ["sweep", "toy_quick", "--dry-run"],
    ["analyze", "-e", "toy", "-m", "metric.mse.val"],
], ids=["run", "sweep-dry-run", "analyze"])
def test_an_unreachable_server_is_one_line_not_a_hang(tmp_path, argv):
    uri = f"http://127.0.0.1:{_closed_port()}"
    proc = run_cli([*LABRUN, *argv], cwd=tmp_path, timeout=90, env_extra={"MLFLOW_TRACKING_URI": uri})
    _one_line_exit_2(proc, uri, "cannot reach", "Connection refused")
    assert not (tmp_path / "mlflow.db").exists()


def test_an_unreachable_database_and_a_missing_folder(tmp_path):
    uri = f"postgresql://someone:secret@127.0.0.1:{_closed_port()}/labrun"
    proc = run_cli([PYTHON, "-m", "projects.toy.train", "--config", "quick"], cwd=tmp_path, timeout=90,
                   env_extra={"MLFLOW_TRACKING_URI": uri})
    line = _one_line_exit_2(proc, "cannot reach", "127.0.0.1")
    assert "secret" not in line  # the password is not printed
    missing = f"sqlite:///{tmp_path}/no/such/folder/mlflow.db"
    proc = run_cli([*LABRUN, "run", "toy", "--config", "quick"], cwd=tmp_path, timeout=90,
                   env_extra={"MLFLOW_TRACKING_URI": missing})
    _one_line_exit_2(proc, "does not exist")


@pytest.mark.slow
def test_a_moved_store_warns_about_its_old_artifact_folder(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()
    short = ["run", "toy", "--config", "quick", "--set", "train.steps=2", "--experiment", "moved"]
    run_cli([*LABRUN, *short], cwd=old, timeout=240, check=True,
            env_extra={"MLFLOW_TRACKING_URI": f"sqlite:///{old}/mlflow.db"})
    shutil.move(old, new)
    proc = run_cli([*LABRUN, *short], cwd=new, timeout=240,
                   env_extra={"MLFLOW_TRACKING_URI": f"sqlite:///{new}/mlflow.db"})
    warned = [ln for ln in proc.stderr.splitlines() if "outside this store's folder" in ln]
    assert len(warned) == 1 and str(old / "mlruns") in warned[0], proc.stderr[-3000:]
    assert "Moving or copying a store" in (REPO / "README.md").read_text()


def _start_ui(tmp_path, *extra: str):
    import os
    import subprocess

    (tmp_path / "tmp").mkdir(exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(REPO), MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path}/mlflow.db",
               TMPDIR=str(tmp_path / "tmp"))
    proc = subprocess.Popen([*LABRUN, "ui", "--port", "0", *extra], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines = []
    for line in proc.stdout:  # the address is printed once the UI answers
        lines.append(line)
        if "open http://" in line:
            return proc, line.split("open ", 1)[1].split()[0].split("/#")[0], lines  # the server's root
    pytest.fail(f"labrun ui printed no address: {lines} {proc.stderr.read()[-2000:]}")


@pytest.mark.parametrize("sig", ["SIGTERM", pytest.param("SIGINT", marks=pytest.mark.slow)])
def test_stopping_labrun_ui_stops_every_process_it_started(tmp_path, sig):
    import os
    import signal
    import urllib.request

    import psutil

    proc, url, lines = _start_ui(tmp_path)
    try:
        urllib.request.urlopen(url + "/health", timeout=10).close()
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert tree, "the UI runs in child processes"
        assert not any("Warning" in ln or "INFO" in ln for ln in lines), lines  # MLflow's noise is in its log
        os.kill(proc.pid, getattr(signal, sig))
        proc.wait(timeout=60)
        _, alive = psutil.wait_procs(tree, timeout=30)
        assert alive == [], [p.cmdline() for p in alive]
        with pytest.raises(OSError):
            urllib.request.urlopen(url + "/health", timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not list((tmp_path / "tmp").glob("labrun-ui-*"))  # MLflow's log folder goes with the UI


def test_a_taken_port_is_refused_naming_its_holder(tmp_path):
    import os

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        proc = run_cli([*LABRUN, "ui", "--port", str(port)], cwd=tmp_path, timeout=90)
        _one_line_exit_2(proc, f"port {port}", "in use", f"pid {os.getpid()}", "--port 0")


def test_version_names_the_release_and_the_commit():
    proc = run_cli([*LABRUN, "--version"], timeout=60, check=True)
    assert proc.stdout.startswith("labrun 0.") and "commit" in proc.stdout


@pytest.mark.slow
def test_piped_output_has_no_bar_redraws(tmp_path):
    """A pipe, a file, a CI log: no carriage returns even with LABRUN_PROGRESS=1, one line per cell."""
    extra = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "LABRUN_PROGRESS": "1"}
    run = run_cli([*LABRUN, "run", "toy", "--config", "quick", "--set", "train.steps=20"], cwd=tmp_path,
                  timeout=300, env_extra=extra, check=True)
    assert "\r" not in run.stderr + run.stdout and "Epoch" in run.stderr
    sweep = run_cli([*LABRUN, "sweep", "toy_quick", "--parallel", "1"], cwd=tmp_path, timeout=600,
                    env_extra=extra, check=True)
    out = sweep.stdout + sweep.stderr
    assert "\r" not in out
    assert max(len(line) for line in out.splitlines()) < 300
    assert len([ln for ln in out.splitlines() if "] finished: " in ln]) == 4, out[-3000:]


@pytest.mark.parametrize("device,needle", [("cuda", "not available here"), ("tpu", "not a torch device"),
                                           ("cuda:7", "not available here")])
def test_a_device_this_machine_lacks_is_refused_before_any_run(tmp_path, device, needle):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = run_cli([*LABRUN, "run", "toy", "--config", "quick", "--set", f"device={device}"], cwd=tmp_path,
                   timeout=120, env_extra={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"})
    _one_line_exit_2(proc, f"device {device!r}", needle, "this machine has: cpu", "'auto' picks the best")
    assert not (tmp_path / "mlflow.db").exists()


def _sigkill_toy(store, tmp):
    """A toy run SIGKILLed after its 5th-step checkpoint, with TMPDIR at ``tmp``; its run id."""
    import os
    import signal
    import subprocess
    import time

    env = dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(tmp))
    proc = subprocess.Popen([PYTHON, "-m", "projects.toy.train", "--config", "quick", "--set", "train.steps=400",
                             "--set", "train.sleep_s=0.05", "--set", "checkpoint.every=5"], cwd=store.root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            runs = [r for r in all_runs(store) if r.data.tags.get("labrun.pid") == str(proc.pid)]
            if runs and store.list_artifacts(runs[0].info.run_id, "checkpoints"):
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(30)
                return runs[0].info.run_id
            time.sleep(0.2)
        pytest.fail("the toy run wrote no checkpoint in time")
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.slow
def test_a_sigkilled_runs_leftovers_go_when_it_is_resumed_or_collected(store, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    extra = {"TMPDIR": str(tmp)}
    first = _sigkill_toy(store, tmp)
    assert list(tmp.glob(f"labrun-{first[:8]}-*")) and (tmp / "labrun-journal" / first).exists()
    resumed = run_cli([*LABRUN, "run", "toy", "--resume", first, "--set", "train.steps=12"], cwd=store.root,
                      env_extra=extra, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert not list(tmp.glob(f"labrun-{first[:8]}-*")) and not (tmp / "labrun-journal" / first).exists()
    assert store.get_run(first).info.status == "KILLED"

    second = _sigkill_toy(store, tmp)
    assert list(tmp.glob(f"labrun-{second[:8]}-*"))
    dry = run_cli([*LABRUN, "gc", "--dry-run"], cwd=store.root, env_extra=extra, timeout=120, check=True)
    assert "would remove" in dry.stdout and list(tmp.glob(f"labrun-{second[:8]}-*"))
    gc = run_cli([*LABRUN, "gc"], cwd=store.root, env_extra=extra, timeout=120, check=True)
    assert f"(run {second})" in gc.stdout
    assert not [p for p in tmp.iterdir() if p.name.startswith("labrun-") and p.is_dir() and p.name != "labrun-journal"]
    assert not (tmp / "labrun-journal" / second).exists()
    run = store.get_run(second)
    assert run.info.status == "KILLED" and "logs/train.log" in {a.path for a in store.list_artifacts(second, "logs")}


@pytest.mark.parametrize("tag,needle", [
    ("labrun.fingerprint=x", "reserved"), ("labrun.task=ired", "reserved"), ("labrun.status=bogus", "--status"),
    ("mlflow.user=x", "reserved"), ("=v", "key before '=' is empty"), ("k" * 251 + "=v", "up to 250"),
    ("k=" + "v" * 8001, "up to 8000"), ("a$b=1", "not one MLflow accepts"),
])
def test_a_tag_that_would_overwrite_bookkeeping_or_break_mlflow_is_refused(tmp_path, tag, needle):
    """Case 3/4: exit 2 in one line and no run, where a reserved tag used to overwrite the
    fingerprint (exit 0) and an over-long key used to fail the run with a traceback."""
    proc = run_cli([*LABRUN, "run", "toy", "--config", "quick", "--tag", tag], cwd=tmp_path, timeout=120,
                   env_extra={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"})
    _one_line_exit_2(proc, needle)
    assert not (tmp_path / "mlflow.db").exists()


def test_resuming_another_tasks_run_names_its_task(store, tmp_path):
    """Case 6: `labrun run ired --resume <toy run>` said 'unknown config key' or made a FAILED
    run with a CheckpointError traceback; now one line naming the run's task, and no run."""
    toy_run = store.create_run(store.create_experiment("toy"), tags={"labrun.task": "toy"}).info.run_id
    for argv in (["ired", "--resume", toy_run], ["ired", "--config", "quick", "--resume", toy_run]):
        proc = run_cli([*LABRUN, "run", *argv], cwd=store.root, timeout=120)
        _one_line_exit_2(proc, f"run {toy_run} is a run of task 'toy', not 'ired'", f"labrun run toy --resume {toy_run}")
    proc = run_cli([*LABRUN, "run", "toy", "--resume", "f" * 32], cwd=store.root, timeout=120)
    _one_line_exit_2(proc, "no run 'ffffffffffffffffffffffffffffffff'")
    assert len(all_runs(store)) == 1


def test_a_stale_experiment_id_in_the_environment_is_one_line(store):
    """``mlflow.set_experiment`` leaves MLFLOW_EXPERIMENT_ID behind; in another store it named
    nothing and the run died inside create_run with MLflow's traceback."""
    proc = run_cli([*LABRUN, "run", "toy", "--config", "quick"], cwd=store.root, timeout=120,
                   env_extra={"MLFLOW_EXPERIMENT_ID": "7"})
    _one_line_exit_2(proc, "MLFLOW_EXPERIMENT_ID=7 names no experiment", "--experiment NAME")
    assert all_runs(store) == []
