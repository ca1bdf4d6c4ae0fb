"""The run lifecycle against a real SQLite store: what a run leaves behind, however it ends."""
from __future__ import annotations

import json
import signal
import subprocess
import textwrap
import time

import pytest
import yaml

from projects.toy import train as toy
from tests.helpers import PYTHON, REPO, all_runs, run_cli
from tracking.provenance import git_info


def _artifact(client, run_id, path):
    local = client.download_artifacts(run_id, path, str(client.root / f"dl-{run_id[:6]}"))
    with open(local) as fh:
        return fh.read()


def _only_run(client):
    runs = all_runs(client)
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return runs[0]


def test_finished_run_records_everything(store):
    toy.main(["--config", "quick", "--seed", "3", "--set", "train.lr=0.02", "--tag", "idea=wide",
              "--status", "keep", "--name", "first", "--description", "a first look"])
    run = _only_run(store)
    tags, params = run.data.tags, run.data.params
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "first"
    assert tags["labrun.task"] == "toy" and tags["labrun.method"] == "adam"
    assert tags["labrun.seed"] == "3" and tags["labrun.condition"] == "default"
    assert tags["labrun.status"] == "keep" and tags["idea"] == "wide"
    assert len(tags["labrun.fingerprint"]) == 16 and len(tags["labrun.group"]) == 16
    assert tags["labrun.git.dirty"] in ("true", "false")
    assert tags["labrun.git.commit"] == git_info(REPO).commit
    assert params["train.lr"] == "0.02" and params["data.n_features"] == "8"
    assert params["checkpoint.every"] == "20"  # from quick.yaml

    doc = yaml.safe_load(_artifact(store, run.info.run_id, "config.yaml"))
    head = doc["experiment"]
    assert head["name"] == "first" and head["description"] == "a first look"
    assert head["run_id"] == run.info.run_id and head["status"] == "keep"
    assert head["cli_overrides"] == ["seed=3", "train.lr=0.02"]
    assert head["base_config"].endswith("projects/toy/configs/quick.yaml")
    assert head["resumed_from"] is None and head["git_commit"] == tags["labrun.git.commit"]
    assert doc["config"]["train"]["lr"] == 0.02 and doc["config"]["seed"] == 3

    summary = json.loads(_artifact(store, run.info.run_id, "summary.json"))
    assert summary["outcome"] == "FINISHED"
    final = summary["training"]["metric.mse.val"]
    history = store.get_metric_history(run.info.run_id, "metric.mse.val")
    assert final["final"] == pytest.approx(history[-1].value) and final["final_step"] == 60
    assert final["best"] == pytest.approx(min(m.value for m in history))
    assert len(store.get_metric_history(run.info.run_id, "loss.total")) == 60

    report = _artifact(store, run.info.run_id, "REPORT.md")
    assert "# first" in report and "| `metric.mse.val` |" in report and "keep" in report
    log = _artifact(store, run.info.run_id, "logs/train.log")
    assert "Epoch 60/60 | loss.total:" in log and "component diagnostics.weight_norms: success" in log
    names = {a.path for a in store.list_artifacts(run.info.run_id, "checkpoints")}
    assert names == {"checkpoints/cp_40.ptz", "checkpoints/cp_60.ptz"}  # keep: 2


def test_components_success_disabled_failed_all_reported(store):
    toy.main(["--config", "quick", "--set", "diagnostics.residuals=true",
              "--set", "diagnostics.broken_probe=true", "--set", "diagnostics.weight_norms=false"])
    run = _only_run(store)
    assert run.info.status == "FINISHED"  # a failing diagnostic does not fail the run
    summary = json.loads(_artifact(store, run.info.run_id, "summary.json"))
    comps = summary["components"]
    assert comps["diagnostics.residuals"]["status"] == "success"
    assert comps["diagnostics.residuals"]["figures"] == ["figures/residuals.png"]
    assert comps["diagnostics.weight_norms"]["status"] == "disabled"
    assert comps["diagnostics.weight_norms"]["enable"] == "--set diagnostics.weight_norms=true"
    assert comps["diagnostics.broken_probe"]["status"] == "failed"
    assert comps["diagnostics.broken_probe"]["reason"] == "ValueError: probe exploded on purpose"
    report = _artifact(store, run.info.run_id, "REPORT.md")
    assert "`diagnostics.broken_probe` | ❌ failed | ValueError: probe exploded on purpose" in report
    assert "enable with `--set diagnostics.weight_norms=true`" in report
    assert "![diagnostics.residuals](figures/residuals.png)" in report
    assert run.data.tags["labrun.component.diagnostics.broken_probe"] == "failed"
    assert {a.path for a in store.list_artifacts(run.info.run_id, "figures")} == {"figures/residuals.png"}


def test_exception_marks_failed_with_reason_log_and_traceback(store):
    with pytest.raises(RuntimeError, match="injected failure at step 37"):
        toy.main(["--config", "quick", "--set", "train.fail_at_step=37"])
    run = _only_run(store)
    assert run.info.status == "FAILED"
    assert run.data.tags["labrun.failure"] == \
        "RuntimeError: injected failure at step 37 (train.fail_at_step)"
    assert run.data.tags["labrun.status"] == "failed"
    tb = _artifact(store, run.info.run_id, "traceback.txt")
    assert "Traceback" in tb and "injected failure" in tb
    assert "Epoch 30/60" in _artifact(store, run.info.run_id, "logs/train.log")
    # Everything logged before the crash reached the store (flushed in finally).
    steps = [m.step for m in store.get_metric_history(run.info.run_id, "loss.total")]
    assert steps == list(range(1, 37))
    summary = json.loads(_artifact(store, run.info.run_id, "summary.json"))
    assert summary["outcome"] == "FAILED" and summary["failure"].startswith("RuntimeError")


@pytest.mark.slow
def test_failed_subprocess_exits_nonzero(store, tmp_path):
    proc = run_cli([PYTHON, "-m", "projects.toy.train", "--config", "quick",
                    "--set", "train.fail_at_step=5"], cwd=tmp_path)
    assert proc.returncode == 1 and "injected failure" in proc.stderr
    assert _only_run(store).info.status == "FAILED"


def _wait_for(predicate, timeout=120.0, every=0.3):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not reached in time")


@pytest.mark.parametrize("sig, code, reason", [
    (signal.SIGTERM, 143, "Interrupted: signal SIGTERM"),
    pytest.param(signal.SIGINT, 130, "Interrupted: KeyboardInterrupt", marks=pytest.mark.slow),
])
def test_signal_marks_killed_and_keeps_checkpoints(store, tmp_path, sig, code, reason):
    env = {"MLFLOW_TRACKING_URI": store.uri}
    import os

    proc = subprocess.Popen(
        [PYTHON, "-m", "projects.toy.train", "--config", "quick", "--set", "train.sleep_s=0.05",
         "--set", "train.steps=400"],
        cwd=tmp_path, env={**os.environ, **env, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def has_checkpoint():
        runs = all_runs(store)
        if not runs:
            return None
        rid = runs[0].info.run_id
        return rid if store.list_artifacts(rid, "checkpoints") else None

    run_id = _wait_for(has_checkpoint)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert f"--resume {run_id}" in err
    run = store.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.tags["labrun.failure"].startswith(reason)
    assert store.list_artifacts(run_id, "checkpoints")
    summary = json.loads(_artifact(store, run_id, "summary.json"))
    assert summary["outcome"] == "KILLED"


def test_nested_under_parent_run(store, monkeypatch):
    import mlflow

    parent = store.create_run(store.create_experiment("sweepy")).info.run_id
    monkeypatch.setenv("LABRUN_PARENT_RUN_ID", parent)
    toy.main(["--config", "quick", "--set", "train.steps=5"])
    monkeypatch.delenv("LABRUN_PARENT_RUN_ID")
    with mlflow.start_run(experiment_id=store.get_run(parent).info.experiment_id) as active:
        toy.main(["--config", "quick", "--set", "train.steps=5"])
        assert mlflow.active_run().info.run_id == active.info.run_id  # parent still active
    children = [r for r in all_runs(store) if r.data.tags.get("labrun.task")]
    parents = {r.data.tags.get("mlflow.parentRunId") for r in children}
    assert parents == {parent, active.info.run_id}
    assert all(r.info.status == "FINISHED" for r in children)


def test_invalid_metric_name_fails_the_run_clearly(store, tmp_path):
    from projects.toy.train import Config
    from tracking import resolve_config, start_run

    cfg = resolve_config(Config, None, [])
    with pytest.raises(ValueError, match=r"invalid metric name 'Loss'.*loss.kl.z"):
        with start_run(cfg) as run:
            run.log_metrics({"Loss": 1.0}, step=0)
    assert _only_run(store).info.status == "FAILED"


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


MINI_TASK = textwrap.dedent('''
    from typing import ClassVar
    from tracking import TaskConfig, load_config, start_run

    class Config(TaskConfig):
        task: ClassVar[str] = "mini"
        steps: int = 3

    def main(argv=None):
        cfg = load_config(Config, argv)
        with start_run(cfg) as run:
            for s in range(cfg.steps):
                run.log_metrics({"loss.total": 1.0 / (s + 1)}, step=s)

    if __name__ == "__main__":
        main()
''')


@pytest.mark.slow
def test_dirty_tree_is_recorded_with_its_diff(store, tmp_path):
    code = tmp_path / "code"
    (code / "minitask").mkdir(parents=True)
    (code / "minitask" / "__init__.py").write_text("")
    (code / "minitask" / "train.py").write_text(MINI_TASK)
    _git(code, "init", "-q")
    _git(code, "-c", "user.email=t@t", "-c", "user.name=t", "add", ".")
    _git(code, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    clean = run_cli([PYTHON, "-m", "minitask.train"], cwd=code,
                    env_extra={"PYTHONPATH": f"{code}:{REPO}"}, check=True)
    assert clean.returncode == 0
    (code / "minitask" / "train.py").write_text(MINI_TASK.replace("steps: int = 3", "steps: int = 4"))
    (code / "notes.txt").write_text("scratch\n")
    run_cli([PYTHON, "-m", "minitask.train"], cwd=code,
            env_extra={"PYTHONPATH": f"{code}:{REPO}"}, check=True)
    runs = sorted(all_runs(store, ["mini"]), key=lambda r: r.info.start_time)
    assert [r.data.tags["labrun.git.dirty"] for r in runs] == ["false", "true"]
    assert runs[0].data.tags["labrun.git.commit"] == runs[1].data.tags["labrun.git.commit"] != "unknown"
    assert "git.diff" not in {a.path for a in store.list_artifacts(runs[0].info.run_id)}
    diff = _artifact(store, runs[1].info.run_id, "git.diff")
    assert "-    steps: int = 3" in diff and "+    steps: int = 4" in diff and "notes.txt" in diff


def test_outside_git_everything_is_unknown(tmp_path):
    info = git_info(tmp_path)
    assert (info.commit, info.dirty, info.branch) == ("unknown", "unknown", "unknown")
