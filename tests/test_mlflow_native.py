"""labrun in the MLflow world: experiments the UI opens on their runs, readable run names,
provenance that ignores the stores, and MLflow 3's datasets, models and system metrics."""
from __future__ import annotations

import json
import subprocess

from projects.toy import train as toy
from tests.helpers import all_runs
from tests.test_run import MINI_TASK, _artifact
from tracking import naming
from tracking.provenance import is_store_file


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_created_experiment_opens_on_the_runs_table(store):
    toy.main(["--config", "quick", "--set", "train.steps=5", "--experiment", "wine"])
    exp = store.get_experiment_by_name("wine")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    assert "labrun" in exp.tags["mlflow.note.content"]


def test_existing_experiment_is_marked_once_and_keeps_its_description(store):
    exp_id = store.create_experiment("mine", tags={"mlflow.note.content": "my words"})
    toy.main(["--config", "quick", "--set", "train.steps=5", "--experiment", "mine"])
    tags = store.get_experiment(exp_id).tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert tags["mlflow.note.content"] == "my words"


def test_runs_get_readable_names_and_a_resume_keeps_it(store):
    toy.main(["--config", "quick", "--seed", "4"])
    first = all_runs(store)[0]
    assert first.info.run_name == "toy-adam-s4"
    toy.main(["--resume", first.info.run_id, "--set", "train.steps=80"])
    second = [r for r in all_runs(store) if r.info.run_id != first.info.run_id][0]
    assert second.info.run_name == "toy-adam-s4-r1"
    toy.main(["--resume", second.info.run_id])
    names = sorted(r.info.run_name for r in all_runs(store))
    assert names == ["toy-adam-s4", "toy-adam-s4-r1", "toy-adam-s4-r2"]


def test_a_run_mlflow_named_at_random_is_renamed(store, monkeypatch):
    exp = store.create_experiment("toy")
    made = store.create_run(exp, run_name="classy-wolf-669")  # what `mlflow run` does
    chosen = store.create_run(exp, run_name="my-choice")      # `mlflow run --run-name my-choice`
    for run in (made, chosen):
        monkeypatch.setenv("MLFLOW_RUN_ID", run.info.run_id)
        toy.main(["--config", "quick", "--set", "train.steps=5", "--seed", "2"])
    assert store.get_run(made.info.run_id).info.run_name == "toy-adam-s2"
    assert store.get_run(chosen.info.run_id).info.run_name == "my-choice"


def test_generated_names_are_told_apart_from_chosen_ones():
    assert naming.is_generated("classy-wolf-669") and naming.is_generated(None)
    assert not naming.is_generated("toy-adam-s4") and not naming.is_generated("ired-none-12")
    assert naming.resumed_name("a-s1-r9") == "a-s1-r10"


def test_store_files_are_never_source_changes():
    for path in ("mlflow.db", "mlflow.db-journal", "sub/mlflow.db-wal", "mlruns/0/x/meta.yaml",
                 "optuna.db", "runs.db-journal", ".labrun/lock", "ckpt/.cp_10.ptz.tmp-1-2"):
        assert is_store_file(path), path
    for path in ("train.py", "data/wine.csv", "mlruns.py", "notes/mlflow.dbx"):
        assert not is_store_file(path), path


def test_a_run_in_a_fresh_repo_without_gitignore_is_clean(store, tmp_path, monkeypatch):
    """The store, artifacts, an Optuna storage and SQLite's journal live in the user's repo,
    which has no .gitignore and even tracks mlflow.db: the run is still not dirty."""
    import importlib

    (tmp_path / "minitask").mkdir()
    (tmp_path / "minitask" / "__init__.py").write_text("")
    (tmp_path / "minitask" / "train.py").write_text(MINI_TASK)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "minitask", "mlflow.db")
    _git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init")
    monkeypatch.syspath_prepend(str(tmp_path))
    task = importlib.import_module("minitask.train")
    task.main([])  # writes mlflow.db (tracked) and mlruns/ (untracked) in the repo
    (tmp_path / "optuna.db").write_bytes(b"x")
    (tmp_path / "mlflow.db-journal").write_bytes(b"x")
    task.main([])
    assert (tmp_path / "mlruns").is_dir() and not (tmp_path / ".gitignore").exists()
    runs = all_runs(store, ["mini"])
    assert [r.data.tags["labrun.git.dirty"] for r in runs] == ["false", "false"]
    assert runs[0].data.tags["labrun.git.commit"] != "unknown"
    (tmp_path / "minitask" / "notes.txt").write_text("real change\n")
    task.main([])
    dirty = sorted(r.data.tags["labrun.git.dirty"] for r in all_runs(store, ["mini"]))
    assert dirty == ["false", "false", "true"]


def test_datasets_model_and_system_metrics_reach_the_run(store):
    """What the run page shows: two inputs with digests and splits, a loadable model with a
    signature, and system/* curves."""
    import mlflow.pytorch
    import torch

    toy.main(["--config", "quick", "--set", "train.steps=30", "--log-model", "on",
              "--register-model", "toy-regressor", "--system-metrics", "on"])
    run = all_runs(store)[0]
    inputs = run.inputs.dataset_inputs
    splits = sorted(next(t.value for t in i.tags if t.key == "mlflow.data.context") for i in inputs)
    assert splits == ["train", "validation"]
    assert all(i.dataset.name == "toy-linear" and len(i.dataset.digest) >= 8 for i in inputs)
    summary = json.loads(_artifact(store, run.info.run_id, "summary.json"))
    model = summary["models"]["model"]
    assert model["status"] == "success", model
    loaded = mlflow.pytorch.load_model(model["data"]["model_uri"])
    assert loaded(torch.zeros(2, 8)).shape == (2, 1)
    assert store.get_latest_versions("toy-regressor")[0].run_id == run.info.run_id
    assert any(k.startswith("system/") for k in run.data.metrics), sorted(run.data.metrics)
    assert [d["split"] for d in summary["datasets"]] == ["train", "validation"]


def test_a_short_run_skips_the_model_and_says_how_to_log_it(store):
    toy.main(["--config", "quick", "--set", "train.steps=5"])
    run = all_runs(store)[0]
    assert run.data.tags["labrun.model"] == "disabled"
    assert "model.mlflow" not in json.loads(_artifact(store, run.info.run_id, "summary.json"))["components"]
    assert not any(k.startswith("system/") for k in run.data.metrics)
    report = _artifact(store, run.info.run_id, "REPORT.md")
    assert "--log-model on" in report


def test_the_html_report_embeds_its_figures(store):
    toy.main(["--config", "quick", "--set", "train.steps=5", "--set", "diagnostics.residuals=true"])
    run = all_runs(store)[0]
    page = _artifact(store, run.info.run_id, "REPORT.html")
    assert "<table>" in page and page.count("data:image/png;base64,") == 1
    assert "figures/residuals.png" not in page.split("data:image")[0].rsplit("<img", 1)[-1]
