"""The anomaly task end to end against a real SQLite store (quick config, generated data)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

pytest.importorskip("anomalib")

from projects.anomaly import train
from tests.helpers import PYTHON, REPO, all_runs, run_cli


def _only(store):
    (run,) = [r for r in all_runs(store) if r.data.tags.get("labrun.task") == "anomaly"]
    return run


def _summary(store, run_id):
    return json.loads(Path(store.download_artifacts(run_id, "summary.json")).read_text())


def test_quick_run_records_auroc_heatmaps_a_checkpoint_and_a_loadable_model(store):
    train.main(["--config", "quick", "--set", "model.patchcore.coreset_sampling_ratio=0.02", "--log-model", "on"])
    run = _only(store)
    assert run.info.status == "FINISHED"
    assert run.data.tags["labrun.method"] == "patchcore"
    m = run.data.metrics
    for name in ("metric.image_auroc.test", "metric.pixel_auroc.test", "metric.pixel_aupro.test"):
        assert 0.0 <= m[name] <= 1.0, name
    assert m["metric.image_auroc.test"] > 0.6  # far above random on the generated stripes
    assert m["perf.train_s"] > 0 and m["perf.test_s"] > 0
    s = _summary(store, run.info.run_id)
    assert s["training"]["metric.image_auroc.test"]["direction"] == "max"
    assert s["results"]["source"] == "domain_A" and s["results"]["cross_domain"] is False
    comps = s["components"]
    assert comps["model"]["status"] == "success" and comps["model"]["data"]["model_type"] == "patchcore"
    assert comps["training.early_stopping"]["status"] == "disabled"
    assert "memory-bank" in comps["training.early_stopping"]["reason"]
    assert comps["figures.heatmaps"]["status"] == "success"
    arts = {a.path for a in store.list_artifacts(run.info.run_id, "figures")}
    assert arts == {"figures/heatmaps.png"}
    assert store.list_artifacts(run.info.run_id, "checkpoints")
    model = s["models"]["model"]
    assert model["status"] == "success" and run.data.tags["labrun.model"] == "success", model
    _loaded_model_scores_images(model["data"]["model_uri"])


def _loaded_model_scores_images(model_uri):
    """The run's MLflow model is the detector alone (no Lightning): loaded with
    mlflow.pytorch.load_model it scores new images, a defective one above a normal one."""
    import mlflow.pytorch
    import numpy as np
    import torch

    from projects.anomaly.data.textures import defective_image, normal_image

    loaded = mlflow.pytorch.load_model(model_uri)
    rng = np.random.default_rng(123)
    good = normal_image("A", rng, 64)
    bad, _ = defective_image("A", "missing", rng, 64)
    images = torch.as_tensor(np.stack([good, bad]), dtype=torch.float32).permute(0, 3, 1, 2)
    with torch.no_grad():
        scores, maps = loaded(images)
    assert scores.shape == (2,) and maps.shape[0] == 2 and torch.isfinite(maps).all()
    assert float(scores[1]) > float(scores[0])


def test_dinomaly_without_weights_finishes_with_the_model_disabled(store):
    train.main(["--config", "quick", "--set", "model.model_type=dinomaly", "--set", "data.image_size=56"])
    run = _only(store)
    assert run.info.status == "FINISHED"
    assert run.data.tags["labrun.component.model"] == "disabled"
    comp = _summary(store, run.info.run_id)["components"]["model"]
    assert "DINOv2" in comp["reason"] and "model.dinomaly.weights=" in comp["enable"]
    assert "metric.image_auroc.test" not in run.data.metrics


@pytest.mark.parametrize("arg, message", [
    ("data.source_domain=E", "unknown generated domain 'E'; the generated set has domains A, B, C, D"),
    ("data.root=/nonexistent/mvtec", "data root '/nonexistent/mvtec' is not a folder"),
    ("model.model_type=dinomaly", "dinomaly needs data.image_size to be a multiple of its ViT patch size 14"),
])
def test_bad_data_settings_exit_2_before_any_run(store, arg, message):
    proc = run_cli([PYTHON, "-m", "projects.anomaly.train", "--config", "quick", "--set", arg],
                   cwd=store.root, env_extra={"MLFLOW_TRACKING_URI": store.uri})
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not [r for r in all_runs(store) if r.data.tags.get("labrun.task") == "anomaly"]


@pytest.mark.slow
def test_cross_domain_condition_tests_on_the_other_domain(store):
    train.main(["--config", "quick", "--set", "data.target_domain=B", "--set", "figures.heatmaps=false"])
    results = _summary(store, _only(store).info.run_id)["results"]
    assert results["source"] == "domain_A" and results["target"] == "domain_B" and results["cross_domain"]


@pytest.mark.slow
def test_killed_fastflow_run_resumes_to_the_end(store, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.uri, "PYTHONPATH": str(REPO)}
    args = [PYTHON, "-m", "projects.anomaly.train", "--config", "quick", "--set", "model.model_type=fastflow",
            "--set", "train.max_epochs=4", "--set", "train.early_stopping_patience=0",
            "--set", "figures.heatmaps=false"]
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline, run_id = time.time() + 300, None
    while time.time() < deadline and run_id is None:
        time.sleep(1)
        runs = [r for r in all_runs(store) if r.data.tags.get("labrun.task") == "anomaly"]
        if runs and store.list_artifacts(runs[0].info.run_id, "checkpoints"):
            run_id = runs[0].info.run_id
    assert run_id, "no checkpoint appeared"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    assert store.get_run(run_id).info.status == "KILLED"
    done = subprocess.run([PYTHON, "-m", "projects.anomaly.train", "--resume", run_id], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = [r for r in all_runs(store) if r.data.tags.get("labrun.resumed_from") == run_id][0]
    assert resumed.info.status == "FINISHED"
    val = store.get_metric_history(resumed.info.run_id, "loss.total.val")
    assert len(val) == 4 and len({m.step for m in val}) == 4
    assert "metric.image_auroc.test" in resumed.data.metrics
