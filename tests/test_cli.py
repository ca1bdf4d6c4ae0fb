"""The `labrun` command: instant help, run, status, tasks, ui."""
from __future__ import annotations

import pytest

import os
import select
import signal
import socket
import subprocess
import time
import urllib.request

from tests.helpers import PYTHON, REPO, all_runs, run_cli


def test_help_imports_nothing_heavy():
    code = ("import sys, labrun.cli; labrun.cli.build_parser().format_help(); "
            "print(sorted(m for m in ('mlflow', 'torch', 'optuna', 'pandas') if m in sys.modules))")
    proc = run_cli([PYTHON, "-c", code], cwd=REPO, check=True)
    assert proc.stdout.strip() == "[]"
    helptext = run_cli([PYTHON, "-m", "labrun", "--help"], cwd=REPO, check=True).stdout
    for command in ("run", "status", "tasks", "ui"):
        assert command in helptext


def test_tasks_lists_entry_points():
    out = run_cli([PYTHON, "-m", "labrun", "tasks"], cwd=REPO, check=True).stdout
    assert any(line.split()[:2] == ["toy", "task"] for line in out.splitlines())


@pytest.mark.slow
def test_run_then_change_status(store, tmp_path):
    run_cli([PYTHON, "-m", "labrun", "run", "toy", "--config", "quick", "--set", "train.steps=5"],
            cwd=tmp_path, check=True)
    run_id = all_runs(store)[0].info.run_id
    assert store.get_run(run_id).data.tags["labrun.status"] == "exploratory"
    run_cli([PYTHON, "-m", "labrun", "status", run_id, "baseline"], cwd=tmp_path, check=True)
    assert store.get_run(run_id).data.tags["labrun.status"] == "baseline"
    bad = run_cli([PYTHON, "-m", "labrun", "status", "nosuchrun", "keep"], cwd=tmp_path)
    assert bad.returncode == 2 and "no run 'nosuchrun'" in bad.stderr
    unknown = run_cli([PYTHON, "-m", "labrun", "run", "nosuchtask"], cwd=tmp_path)
    assert unknown.returncode == 2 and "unknown task 'nosuchtask'" in unknown.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_serves_the_store_on_localhost(store, tmp_path):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([PYTHON, "-m", "labrun", "ui", "--port", str(port)], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        body, deadline = None, time.time() + 120
        while time.time() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/"
                                            f"experiments/search?max_results=10", timeout=2) as resp:
                    body = resp.read().decode()
            except OSError:
                time.sleep(0.5)
        assert body is not None, "the UI did not answer"
        assert '"name": "Default"' in body or '"name":"Default"' in body
        # labrun ui prints once its own health check answers, which may come just after ours
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        first = proc.stdout.readline() if ready else ""
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    assert f"MLflow UI on {store.uri}" in first
