"""The time-series task through the mutual entry point on a real store: what a run records
(mse/mae per model and split, the naive floors, the shift's test_clean), the weak peer, the
export schema, a bad CSV path as a one-line exit 2, and resume after a SIGKILL."""
from __future__ import annotations

import csv
import json

import pytest

from tests.helpers import PYTHON, REPO, all_runs, run_cli, sigkill_after_checkpoint

TINY = ["--config", "timeseries_quick", "--set", "series.synthetic.length=600", "--set", "series.lookback=48",
        "--set", "series.horizon=12", "--set", "series.test_horizon=24", "--set", "train.epochs=2",
        "--set", "train.probe_size=16", "--set", "train.batch_size=64"]


def _summary(store, run_id):
    path = store.download_artifacts(run_id, "summary.json", str(store.root / f"s-{run_id[:6]}"))
    return json.loads(open(path).read())


def test_a_run_records_both_models_the_floors_and_test_clean(store):
    from projects.mutual.train import main

    main(TINY + ["--set", "condition=temporal_shift+horizon_shift", "--set", "method.name=ssmo-soft"])
    (run,) = all_runs(store)
    tags, metrics = run.data.tags, run.data.metrics
    assert run.info.status == "FINISHED" and tags["mutual.problem"] == "timeseries"
    assert tags["mutual.dataset"] == "synthetic_series" and tags["labrun.condition"] == "temporal_shift+horizon_shift"
    assert (tags["mutual.model_a"], tags["mutual.model_b"]) == ("dlinear", "patchtst")
    for m in ("a", "b"):
        for split in ("train", "val", "test", "test_clean"):
            assert metrics[f"metric.{m}.mse.{split}"] > 0 and metrics[f"metric.{m}.mae.{split}"] > 0
        assert f"dynamics.{m}.conflict_rate" in metrics and f"loss.{m}.imitation" in metrics
    s = _summary(store, run.info.run_id)
    data = s["results"]["data"]
    assert data["horizons"] == {"train": 12, "val": 12, "test": 24, "test_clean": 12} and data["gap_steps"] == 60
    assert set(data["floors"]["test"]) == {"naive", "seasonal_naive"}
    assert data["floors"]["test"]["naive"]["mse"] > data["floors"]["test"]["seasonal_naive"]["mse"] > 0
    hist = store.get_metric_history(run.info.run_id, "metric.a.mse.val")
    assert s["results"]["per_model"]["a"]["best.mse.val"] == pytest.approx(min(h.value for h in hist))


def test_weak_peer_run_and_the_export_schema(store, tmp_path):
    from analysis.export import export
    from projects.mutual.train import main

    main(TINY + ["--set", "condition=weak_peer+missing_block20", "--set", "model_b.name=lstm",
                 "--set", "model_b.width=16", "--set", "model_b.depth=1", "--set", "train.weak_peer_width_factor=0.5",
                 "--set", "train.weak_peer_epochs_fraction=0.5", "--experiment", "mutual_timeseries"])
    (run,) = all_runs(store, ["mutual_timeseries"])
    assert [h.value for h in store.get_metric_history(run.info.run_id, "diag.b.updated")] == [1.0, 0.0]
    s = _summary(store, run.info.run_id)
    assert s["results"]["models"]["b"]["parameters"] == 4 * 8 * (3 + 8 + 2) + 8 * 12 * 3 + 12 * 3  # width 16 x 0.5
    assert s["results"]["data"]["missing"]["block"] == 0.2
    (path,) = export(["mutual_timeseries"], tmp_path / "out", schema=REPO / "projects/mutual/export_timeseries.yaml")
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == 1 and rows[0]["dataset"] == "synthetic_series"
    assert rows[0]["condition"] == "weak_peer+missing_block20"
    assert rows[0]["model2"] == "lstm" and float(rows[0]["model1_final_test_mse"]) > 0
    assert float(rows[0]["model2_best_val_mse"]) > 0 and float(rows[0]["model2_final_test_mae"]) > 0


@pytest.mark.parametrize("extra, word", [
    (["--set", "data.path=nowhere/ETTh1.csv"], "data.path=nowhere/ETTh1.csv is not a file"),
    (["--set", "series.target=price"], "series.target=price is not a column"),
])
def test_a_bad_csv_exits_2_with_one_line_and_no_run(store, extra, word):
    (store.root / "ETTh1.csv").write_text("date,HUFL,OT\n" + "".join(f"2020-01-01 {i:02d}:00,{i},{2 * i}\n"
                                                                     for i in range(24)))
    args = ["--set", "data.dataset=csv", "--set", f"data.path={store.root / 'ETTh1.csv'}", *extra]
    proc = run_cli([PYTHON, "-m", "labrun", "run", "mutual", "--config", "timeseries_quick", *args],
                   cwd=store.root, timeout=180)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and word in lines[0], proc.stderr
    assert all_runs(store) == []


@pytest.mark.slow
def test_resume_after_sigkill_reproduces_the_uninterrupted_run(store):
    from projects.mutual.train import main

    args = TINY + ["--set", "train.epochs=4", "--set", "checkpoint.every=1", "--set", "method.name=ssmo-hard",
                   "--set", "condition=missing_random20", "--set", "model_b.dropout=0.1"]
    victim_id, reference_id = sigkill_after_checkpoint(
        store, "projects.mutual.train", [*args, "--set", "train.sleep_s=1.5"], "cp_2.ptz",
        reference=lambda: main(args))
    main(["--resume", victim_id])
    resumed = [r for r in all_runs(store) if r.data.tags.get("labrun.resumed_from") == victim_id][0]
    assert int(resumed.data.tags["labrun.resumed_step"]) >= 2
    keys = [k for k in store.get_run(reference_id).data.metrics if not k.startswith("perf.")]
    assert "metric.b.mse.test_clean" in keys
    for key in keys:
        ref = [(m.step, m.value) for m in store.get_metric_history(reference_id, key)]
        got = [(m.step, m.value) for m in store.get_metric_history(resumed.info.run_id, key)]
        assert sorted(got) == sorted(ref), key
