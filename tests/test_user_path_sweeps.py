"""Issue #25 cases 9-14 and #34 case 3: sweeps and studies off the happy path, in real processes
on real stores (SQLite MLflow store, SQLite Optuna storage), nothing mocked."""
from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers import PYTHON, REPO, all_runs, run_cli


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PATH"] = str(Path(PYTHON).parent) + os.pathsep + env.get("PATH", "")
    env.update(MLFLOW_DISABLE_TELEMETRY="true", WANDB_MODE="disabled", LABRUN_PROGRESS="0", **extra)
    return env


def _write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


TOY = """
    entry: toy
    name: {name}
    config: quick
    overrides: {{train.steps: {steps}, train.eval_every: 2, checkpoint.every: 2, train.sleep_s: {sleep}}}
    matrix:
      train.optimizer: [adam, sgd]
    seeds: [0]
    parallel: 2
"""


# ------------------------------------------------------------------------------------ case 11

@pytest.mark.parametrize("command", ["sweep", "optimize"])
@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "-x"])
def test_a_path_like_name_is_one_line_at_load_and_nothing_is_written(store, tmp_path, command, name):
    body = (TOY.format(name="n", steps=2, sleep=0) if command == "sweep" else
            "entry: toy\nname: n\nconfig: quick\nspace: {train.lr: {type: float, low: 0.001, high: 0.1}}\n"
            "objective: {metric: metric.mse.val}\nstorage: sqlite:///optuna.db\n")
    spec = _write(tmp_path, body)
    args = [PYTHON, "-m", "labrun", command, str(spec), "--set", f"name={name}"]
    if command == "sweep":
        args.append("--dry-run")
    proc = run_cli(args, env_extra=_env(), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "name" in lines[0] and "plain word" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not proc.stdout.strip()
    assert [e.name for e in store.search_experiments()] == ["Default"]
    assert not (tmp_path / "optuna.db").exists()


def test_a_failure_after_the_parent_exists_ends_it_failed(store, tmp_path):
    """The ray launcher is not installed here: building it fails after the parent run was
    made. The parent must end FAILED with the reason, never stay RUNNING."""
    spec = _write(tmp_path, TOY.format(name="noray", steps=2, sleep=0))
    proc = run_cli([PYTHON, "-m", "labrun", "sweep", str(spec), "--set", "launcher=ray"],
                   env_extra=_env(), cwd=tmp_path, timeout=240)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "needs ray" in proc.stderr and "Traceback" not in proc.stderr
    (parent,) = [r for r in all_runs(store) if r.data.tags.get("labrun.kind") == "sweep"]
    assert parent.info.status == "FAILED", parent.info.status
    assert "needs ray" in parent.data.tags["labrun.failure"]


# ------------------------------------------------------------------------------------ case 12

def _children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_during_the_cells_exits_143_and_ends_them_killed(store, tmp_path):
    spec = _write(tmp_path, TOY.format(name="term", steps=40, sleep=0.3))
    log = open(tmp_path / "sweep.log", "w")
    proc = subprocess.Popen([PYTHON, "-m", "labrun", "sweep", str(spec)], cwd=tmp_path, env=_env(),
                            stdout=log, stderr=subprocess.STDOUT)
    _wait(lambda: any(r.info.status == "RUNNING" and r.data.params.get("train.optimizer")
                      for r in all_runs(store)), 180, "a cell that has started training")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) == 143, (tmp_path / "sweep.log").read_text()
    runs = all_runs(store)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    (parent,) = [r for r in runs if r.data.tags.get("labrun.kind") == "sweep"]
    assert parent.info.status == "KILLED"


def test_sigterm_while_planning_exits_143_and_leaves_no_process(store, tmp_path):
    """SIGTERM while the sweep starts its fork server (before any run exists): 143, not a
    death by the default handler (-15 here), and the fork server goes too."""
    spec = _write(tmp_path, TOY.format(name="early", steps=2, sleep=0))
    proc = subprocess.Popen([PYTHON, "-m", "labrun", "sweep", str(spec)], cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait(lambda: _children_of(proc.pid) or proc.poll() is not None, 120, "the fork server")
    helpers = _children_of(proc.pid)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    assert "Traceback" not in out, out
    _wait(lambda: not any(map(_alive, helpers)), 30, "the fork server to go")
    assert not [r for r in all_runs(store) if r.info.status == "RUNNING"]
