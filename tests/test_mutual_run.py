"""The mutual entry point on a real store: what a run records, bad names, resume after a
SIGKILL, `mlflow run -e mutual`, and the study's export schema."""
from __future__ import annotations

import csv
import json

import pytest

from tests.helpers import PYTHON, REPO, all_runs, run_cli, sigkill_after_checkpoint

TINY = ["--config", "quick", "--set", "data.max_train=256", "--set", "data.max_test=128",
        "--set", "train.epochs=3", "--set", "train.probe_size=32"]


def _summary(store, run_id):
    path = store.download_artifacts(run_id, "summary.json", str(store.root / f"s-{run_id[:6]}"))
    return json.loads(open(path).read())


def test_a_run_logs_both_models_dynamics_and_a_section_per_model(store):
    from projects.mutual.train import main

    main(TINY + ["--set", "method.name=ssmo-soft", "--set", "condition=noise20"])
    (run,) = all_runs(store)
    tags, metrics = run.data.tags, run.data.metrics
    assert run.info.status == "FINISHED"
    assert tags["labrun.method"] == "ssmo-soft" and tags["labrun.condition"] == "noise20"
    assert tags["mutual.model_a"] == "mlp" and tags["mutual.model_b"] == "cnn"
    for m in ("a", "b"):
        for k in ("conflict_rate", "grad_cosine", "mask_ratio", "grad_norm_ratio"):
            assert f"dynamics.{m}.{k}" in metrics
        for k in ("task", "imitation"):
            assert f"loss.{m}.{k}" in metrics
        for split in ("train", "val", "test"):
            assert 0.0 <= metrics[f"metric.{m}.accuracy.{split}"] <= 1.0
    assert [h.step for h in store.get_metric_history(run.info.run_id, "dynamics.a.mask_ratio")] == [1, 2, 3]
    s = _summary(store, run.info.run_id)
    comps = s["components"]
    assert comps["model.a"]["data"]["model"] == "mlp" and comps["model.b"]["data"]["model"] == "cnn"
    assert comps["figures.dynamics"]["status"] == "success"
    assert comps["diagnostics.noisy_labels"]["status"] == "success"  # label noise is on
    per_model = s["results"]["per_model"]
    hist = store.get_metric_history(run.info.run_id, "metric.a.accuracy.val")
    assert per_model["a"]["best.accuracy.val"] == pytest.approx(max(h.value for h in hist))
    assert per_model["a"]["final.accuracy.test"] == pytest.approx(metrics["metric.a.accuracy.test"])
    report = open(store.download_artifacts(run.info.run_id, "REPORT.md", str(store.root / "r"))).read()
    assert "model.a" in report and "model.b" in report and "dynamics.png" in report


def test_independent_has_no_imitation_and_naive_always_imitates(store):
    from projects.mutual.train import main

    main(TINY + ["--set", "method.name=independent", "--name", "ind"])
    main(TINY + ["--set", "method.name=naive", "--name", "dml"])
    runs = {r.info.run_name: r.data.metrics for r in all_runs(store)}
    assert runs["ind"]["dynamics.a.mask_ratio"] == 0.0 and runs["ind"]["loss.a.imitation"] >= 0.0
    assert runs["ind"]["dynamics.a.grad_norm_ratio"] == 0.0
    assert runs["dml"]["dynamics.a.mask_ratio"] == 1.0 and runs["dml"]["dynamics.b.grad_norm_ratio"] > 0.0


@pytest.mark.parametrize("override, valid", [
    ("method.name=ssmo", "valid: independent, naive, ssmo-hard, ssmo-soft"),
    ("model_b.name=vgg", "valid: mlp, cnn, resnet18"),
    ("condition=noisy", "valid: clean, noise<NN>"),
])
def test_bad_names_exit_2_listing_the_valid_ones(store, override, valid):
    proc = run_cli([PYTHON, "-m", "projects.mutual.train", "--config", "quick", "--set", override],
                   cwd=store.root, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and valid in lines[0], proc.stderr
    assert all_runs(store) == []


def test_missing_dataset_path_is_one_line_and_no_run(store):
    proc = run_cli([PYTHON, "-m", "labrun", "run", "mutual", "--config", "quick", "--set", "data.dataset=cifar10",
                    "--set", f"data.path={store.root / 'nowhere'}"], cwd=store.root, timeout=120)
    assert proc.returncode == 2 and "data.path" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert all_runs(store) == []


@pytest.mark.slow
def test_resume_after_sigkill_reproduces_the_uninterrupted_run(store):
    from projects.mutual.train import main

    args = TINY + ["--set", "train.epochs=4", "--set", "checkpoint.every=1", "--set", "method.name=ssmo-hard"]
    victim_id, reference_id = sigkill_after_checkpoint(
        store, "projects.mutual.train", [*args, "--set", "train.sleep_s=1.5"], "cp_2.ptz",
        reference=lambda: main(args))
    main(["--resume", victim_id])
    resumed = [r for r in all_runs(store) if r.data.tags.get("labrun.resumed_from") == victim_id][0]
    assert int(resumed.data.tags["labrun.resumed_step"]) >= 2
    keys = [k for k in store.get_run(reference_id).data.metrics if not k.startswith("perf.")]
    for key in keys:
        ref = [(m.step, m.value) for m in store.get_metric_history(reference_id, key)]
        got = [(m.step, m.value) for m in store.get_metric_history(resumed.info.run_id, key)]
        assert sorted(got) == sorted(ref), key


def test_export_writes_the_study_schema_one_row_per_run(store, tmp_path):
    from analysis.export import export
    from projects.mutual.train import main

    main(TINY + ["--seed", "1", "--experiment", "mutual"])
    main(TINY + ["--seed", "2", "--set", "method.name=naive", "--experiment", "mutual"])
    (path,) = export(["mutual"], tmp_path, schema=REPO / "projects" / "mutual" / "export.yaml")
    rows = list(csv.reader(open(path)))
    assert rows[0] == ["run_id", "seed", "task", "dataset", "method", "model1", "model2", "condition", "status",
                       "model1_best_val_accuracy", "model1_final_test_accuracy", "model2_best_val_accuracy",
                       "model2_final_test_accuracy", "wall_time_s"]
    assert len(rows) == 3 and rows[0] not in rows[1:]   # one header, one row per run
    body = {r[1]: r for r in rows[1:]}
    assert body["1"][4] == "ssmo-hard" and body["2"][4] == "naive" and body["1"][2] == "classification"
    assert body["1"][3] == "digits" and float(body["1"][10]) <= 1.0 and float(body["2"][13]) > 0


def test_a_bad_export_schema_names_the_column(store, tmp_path):
    from analysis.export import export
    from projects.mutual.train import main
    from tracking.config import ConfigError

    main(TINY + ["--experiment", "mutual"])
    bad = tmp_path / "schema.yaml"
    bad.write_text("columns: {seed: labrun.seeed}\n")
    with pytest.raises(ConfigError, match="did you mean labrun.seed"):
        export(["mutual"], tmp_path / "out", schema=bad)


@pytest.mark.slow
def test_mlflow_run_entry_point_with_task_and_method(store):
    proc = run_cli(["mlflow", "run", str(REPO), "-e", "mutual", "--env-manager", "local",
                    "--experiment-name", "mutual", "-P", "config=quick", "-P", "task=classification",
                    "-P", "method=ssmo-hard", "-P", "train.epochs=2"], cwd=store.root, timeout=400,
                   env_extra={"MLFLOW_TRACKING_URI": store.uri})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = all_runs(store, ["mutual"])
    assert run.info.status == "FINISHED" and run.data.tags["labrun.method"] == "ssmo-hard"
    assert run.data.params["train.epochs"] == "2" and "metric.b.accuracy.test" in run.data.metrics
