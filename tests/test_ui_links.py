"""The links labrun prints and the runs-table views they open (tracking/views.py, naming, ui)."""
from __future__ import annotations

import os
import textwrap

import pytest

from tests.helpers import PYTHON, REPO, all_runs, run_cli
from tracking import naming, views


# ---------------------------------------------------------------------------- names

def test_short_names_are_unique_readable_and_at_most_32_characters():
    ired = naming.short_names([{"mining.strategy": s, "seed": i} for s in ("none", "random", "adversarial")
                               for i in (0, 1)], "ired")
    assert ired == ["ired-none-s0", "ired-none-s1", "ired-random-s0", "ired-random-s1",
                    "ired-adversarial-s0", "ired-adversarial-s1"]
    elastic = naming.short_names([{"alpha": a, "l1_ratio": r, "seed": 0} for a in (1.0, 0.1, 0.01)
                                  for r in (0.1, 0.5)], "elasticnet")
    assert elastic[0] == "elasticnet-1-0.1" and "seed" not in "".join(elastic)   # constants left out
    mutual = naming.short_names([{"condition": c, "model_pair": m, "method": x, "seed": 0}
                                 for c in ("clean", "missing_block20") for m in ("mlp_cnn", "cnn_resnet18")
                                 for x in ("independent", "naive", "ssmo-hard", "ssmo-soft")], "mutual")
    long = naming.short_names([{"x": "a" * 60 + str(i)} for i in range(3)], "task")
    for names in (ired, elastic, mutual, long):
        assert len(set(names)) == len(names) and max(map(len, names)) <= naming.MAX_NAME, names
    assert "clean-mlp_cnn-ssmo-h" in mutual[2]   # cut only as far as still tells them apart


# ---------------------------------------------------------------------------- addresses

def test_every_link_selects_the_model_training_view_from_one_base(monkeypatch):
    monkeypatch.setenv("LABRUN_UI_URL", "http://ui.example:8123/")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///nowhere.db")
    assert views.ui_base() == "http://ui.example:8123"
    assert views.experiments_url() == "http://ui.example:8123/#/experiments?workflowType=machine_learning"
    assert views.experiment_url("3") == "http://ui.example:8123/#/experiments/3?workflowType=machine_learning"
    assert views.experiment_url("3", "s1") == ("http://ui.example:8123/#/experiments/3/runs"
                                               "?viewStateShareKey=s1&workflowType=machine_learning")
    assert views.run_url("3", "abc").endswith("/#/experiments/3/runs/abc?workflowType=machine_learning")
    monkeypatch.delenv("LABRUN_UI_URL")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracker:5005")
    assert views.ui_base() == "http://tracker:5005"


def test_the_running_labrun_ui_is_the_base_while_it_runs(tmp_path, monkeypatch):
    from tracking import ui

    monkeypatch.delenv("LABRUN_UI_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(ui, "_registry", lambda: tmp_path / "reg")
    uri = "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert views.ui_base() == f"http://127.0.0.1:{ui.DEFAULT_PORT}"      # nothing serves it
    mark = ui.register(f"sqlite:///{tmp_path}/mlflow.db", "http://127.0.0.1:40123")   # same store, absolute
    assert views.ui_base() == "http://127.0.0.1:40123"
    ui.unregister(mark)
    assert views.ui_base() == f"http://127.0.0.1:{ui.DEFAULT_PORT}"
    ui.register(uri, "http://127.0.0.1:40124")
    doc = (tmp_path / "reg").glob("*.json").__next__()
    doc.write_text(doc.read_text().replace(str(os.getpid()), "999999999"))  # its process is gone
    assert views.ui_base() == f"http://127.0.0.1:{ui.DEFAULT_PORT}"


# ---------------------------------------------------------------------------- the saved view

def test_the_runs_table_view_sorts_by_the_objective_with_its_columns_and_chart_order():
    metrics = ["diag.lr", "loss.total", "metric.mse.val", "metric.mse.train", "system/cpu_utilization_percentage"]
    assert views.guess_objective(metrics) == "metric.mse.val"
    assert views.guess_objective(["rmse", "r2", "mae", "loss.x"]) == "rmse"    # the elasticnet example
    assert views.larger_is_better("metric.accuracy.val") and not views.larger_is_better("metric.mse.val")
    assert views.chart_order(metrics, "metric.mse.val") == [
        "metric.mse.val", "loss.total", "metric.mse.train", "diag.lr", "system/cpu_utilization_percentage"]
    state = views.runs_table_state("metric.mse.val", ascending=True, params=["mining.strategy", "seed"],
                                   metrics=metrics)
    assert state["orderByKey"] == "metrics.`metric.mse.val`" and state["orderByAsc"] is True
    assert state["selectedColumns"][:3] == ["metrics.`metric.mse.val`", "params.`mining.strategy`",
                                            "params.`seed`"]
    charts = state["compareRunCharts"]
    assert charts[0]["type"] == "PARALLEL" and charts[0]["selectedMetrics"] == ["metric.mse.val"]
    assert [c["metricKey"] for c in charts[1:]] == views.chart_order(metrics, "metric.mse.val")
    model = next(s for s in state["compareRunSections"] if s["name"] == "Model metrics")
    assert model["isReordered"]   # the UI then appends new metrics instead of sorting them in
    assert views.decode(views.encode(state)) == state
    many = views.runs_table_state("m", params=["p"], metrics=[f"metric.m{i:03d}" for i in range(200)])
    packed = views.encode(many)
    assert packed.startswith("deflate;") and len(packed) <= views.MAX_TAG_VALUE


def test_a_saved_view_is_an_experiment_tag_the_links_then_open(store):
    exp = store.create_experiment("viewed")
    assert views.experiment_link(store, exp).endswith(f"/#/experiments/{exp}?workflowType=machine_learning")
    key = views.save_view(store, exp, "my sweep!", views.runs_table_state("metric.x", params=["a"]))
    tags = store.get_experiment(exp).tags
    assert key == "my-sweep" and views.decode(tags["mlflow.sharedViewState.my-sweep"])["orderByKey"] == \
        "metrics.`metric.x`"
    assert views.experiment_link(store, exp).endswith("/runs?viewStateShareKey=my-sweep&workflowType=machine_learning")


def test_analysis_runs_live_beside_the_experiment_they_analyse():
    assert views.analysis_experiment_name("ired") == "ired · analysis"
    assert views.analysis_experiment_name("ired · analysis") == "ired · analysis"


# ---------------------------------------------------------------------------- mlflow run -e sweep

@pytest.mark.slow
def test_mlflow_run_sweep_without_experiment_name_twice_starts_no_cell_the_second_time(store, tmp_path):
    """MLflow puts the entry point's run in Default; the cells and their ledger stay in the
    spec's experiment, so the second `mlflow run` finds every cell finished."""
    spec = tmp_path / "twice.yaml"
    spec.write_text(textwrap.dedent("""
        entry: toy
        name: twice
        config: quick
        overrides: {train.steps: 3, train.eval_every: 3, checkpoint.every: 0}
        seeds: [0, 1]
        parallel: 2
        experiment: twice_exp
    """))
    cmd = [PYTHON, "-m", "mlflow", "run", str(REPO), "-e", "sweep", "-P", f"spec={spec}", "--env-manager", "local"]
    first = run_cli(cmd, cwd=tmp_path, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    second = run_cli(cmd, cwd=tmp_path, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "2 skipped as already finished" in second.stdout and "(2 done)" in second.stdout, second.stdout
    cells = [r for r in all_runs(store) if r.data.tags.get("labrun.task") == "toy"]
    assert len(cells) == 2 and {r.info.experiment_id for r in cells} == \
        {store.get_experiment_by_name("twice_exp").experiment_id}
    launched = [r for r in all_runs(store, ["Default"]) if r.data.tags.get("mlflow.project.entryPoint") == "sweep"]
    assert len(launched) == 2 and all(r.data.tags.get("labrun.kind") == "sweep-launcher" for r in launched)
    assert "twice_exp" in launched[0].data.tags["mlflow.note.content"]
    assert "in another experiment" in second.stderr


def test_optuna_names_the_objective_and_links_each_trials_runs(monkeypatch):
    import optuna
    from optuna_dashboard import get_note

    monkeypatch.setenv("LABRUN_UI_URL", "http://ui:9")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    views.name_objectives(study, ["metric.mse.val"])
    assert study.metric_names == ["metric.mse.val"]       # optuna-dashboard's axis label and column
    trial = study.ask()
    views.trial_links(trial, "4", ["a" * 32, "b" * 32])
    study.tell(trial, 1.0)
    frozen = study.trials[0]
    assert frozen.user_attrs["mlflow_run_urls"][1] == f"http://ui:9/#/experiments/4/runs/{'b' * 32}" \
                                                       "?workflowType=machine_learning"
    note = get_note(trial)     # Markdown: the dashboard renders these as links (user attributes as text)
    assert f"[aaaaaaaa](http://ui:9/#/experiments/4/runs/{'a' * 32}?workflowType=machine_learning)" in note
