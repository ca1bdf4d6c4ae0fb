"""`mlflow run` end to end: MLflow's own run is adopted and keeps its source tags."""
from __future__ import annotations

import pytest

import json

from tests.helpers import REPO, all_runs, run_cli
from tests.helpers import PYTHON


def test_mlflow_run_adopts_the_run_and_keeps_source_tags(store, tmp_path):
    proc = run_cli([PYTHON, "-m", "mlflow", "run", str(REPO), "-e", "toy", "--env-manager", "local",
                    "-P", "config=quick", "-P", "seed=3", "-P", "train.lr=1e-3",
                    "-P", "train.steps=30"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # no --experiment-name: MLflow made the run in Default, and the run says how to avoid that
    assert "put this run in MLflow's Default experiment" in proc.stderr
    assert "mlflow run . -e toy --experiment-name toy" in proc.stderr
    runs = all_runs(store)
    assert len(runs) == 1
    run = runs[0]
    tags, params = run.data.tags, run.data.params
    assert run.info.status == "FINISHED"
    assert tags["mlflow.source.git.commit"] and tags["mlflow.project.entryPoint"] == "toy"
    assert tags["labrun.task"] == "toy" and tags["labrun.seed"] == "3"
    assert tags["labrun.git.commit"] == tags["mlflow.source.git.commit"]
    # MLflow logged the -P values as typed; labrun did not fight over them.
    assert params["train.lr"] == "1e-3" and params["seed"] == "3" and params["config"] == "quick"
    assert params["train.steps"] == "30" and params["model.hidden"] == "32"
    summary = json.loads(open(store.download_artifacts(run.info.run_id, "summary.json",
                                                       str(tmp_path))).read())
    assert summary["training"]["loss.total"]["final_step"] == 30


@pytest.mark.slow
def test_mlflow_run_with_bad_override_records_the_reason(store, tmp_path):
    proc = run_cli([PYTHON, "-m", "mlflow", "run", str(REPO), "-e", "toy", "--env-manager", "local",
                    "-P", "config=quick", "-P", "train.lrr=1"], cwd=tmp_path)
    assert proc.returncode != 0
    assert "unknown config key 'train.lrr'" in proc.stderr
    runs = all_runs(store)
    # MLflow creates its run before our code starts; it must end FAILED with the reason.
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert runs[0].data.tags["labrun.failure"].startswith("ConfigError: unknown config key 'train.lrr'")
