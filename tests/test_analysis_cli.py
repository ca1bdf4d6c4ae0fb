"""`labrun analyze` / `labrun export` end to end on real toy runs in a temp SQLite store."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from analysis import query, synthetic
from tests.helpers import PYTHON, REPO, run_cli

EXP = "toy-seeds"
METRIC = "metric.mse.val"


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """2 optimizers x 3 seeds of the real toy task (in-process: seconds, not minutes), 1 failed run."""
    root = tmp_path_factory.mktemp("analysis_cli")
    uri = synthetic.sqlite_store(root / "mlflow.db", tmp_path_factory.getbasetemp() / "analysis-template")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "LABRUN_PARENT_RUN_ID"):
            mp.delenv(var, raising=False)
        import mlflow
        from mlflow.tracking import MlflowClient

        from projects.toy.train import main as toy_main

        mlflow.set_tracking_uri(uri)
        short = ["--config", "quick", "--set", "train.steps=30", "--set", "train.eval_every=10",
                 "--experiment", EXP]
        for opt in ("adam", "sgd"):
            for seed in range(3):
                toy_main(short + ["--seed", str(seed), "--set", f"train.optimizer={opt}"])
        with pytest.raises(RuntimeError, match="injected failure"):
            toy_main(short + ["--seed", "9", "--set", "train.fail_at_step=3"])
        client = MlflowClient(tracking_uri=uri)
        client.create_experiment("empty")
        yield root, uri, client


def _runs(client, exp=EXP):
    return client.search_runs([client.get_experiment_by_name(exp).experiment_id], max_results=1000)


def _cli(argv, capsys):
    from labrun.cli import main

    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_analyze_end_to_end_in_a_subprocess(toy):
    root, uri, client = toy
    proc = run_cli([PYTHON, "-m", "labrun", "analyze", "--experiment", EXP, "--metric", METRIC],
                   env_extra={"MLFLOW_TRACKING_URI": uri}, cwd=root, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    rows = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(adam|sgd)\s+(\d+)\s+\S+ ± ", out, re.M)}
    assert rows == {"adam": 3, "sgd": 3}, out
    assert "6 FINISHED runs analysed" in out and "1 failed run excluded" in out
    assert "Kendall's W" in out and "95% CI (t)" in out and "paired t p" in out
    run_id = re.search(r"analysis run ([0-9a-f]{32})", out).group(1)
    run = client.get_run(run_id)
    assert run.data.tags["labrun.analysis"] == METRIC and run.info.status == "FINISHED"
    analysis_exp = client.get_experiment_by_name(EXP + " · analysis")   # beside the runs, not among them
    assert run.info.experiment_id == analysis_exp.experiment_id
    assert analysis_exp.tags["labrun.analysis.of"] == EXP
    assert client.get_experiment_by_name(EXP).tags["labrun.analysis.experiment"] == EXP + " · analysis"
    names = {a.path for a in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "figures")}
    for expected in ("table.md", "table.tex", "ranks.md", "ranks.tex", "paired.md", "stats.json", "runs.csv",
                     "analysis.md", "figures/curves_metric_mse_val.png", "figures/best_vs_final_metric_mse_val.png",
                     "figures/ranks_metric_mse_val.png"):
        assert expected in names
    doc = json.loads(open(client.download_artifacts(run_id, "stats.json", str(root))).read())
    assert sorted((g["group"], g["n"]) for g in doc["groups"]) == [("adam", 3), ("sgd", 3)]
    assert doc["excluded"] == {"failed run": 1}
    tex = open(client.download_artifacts(run_id, "table.tex", str(root))).read()
    assert r"\begin{tabular}" in tex and r"$\pm$" in tex


def test_analysis_runs_are_left_out_of_later_analyses(toy, capsys):
    root, uri, client = toy
    code, out, _ = _cli(["analyze", "-e", EXP, "-m", METRIC, "--no-curves", "--bootstrap", "500"], capsys)
    assert code == 0 and "6 FINISHED runs analysed" in out      # not 7: this run's own analysis run
    code, out, _ = _cli(["analyze", "-e", EXP, "-m", METRIC, "--no-curves", "--bootstrap", "500"], capsys)
    assert code == 0 and "6 FINISHED runs analysed" in out      # nor the one made just before
    assert not [r for r in _runs(client) if "labrun.analysis" in r.data.tags]   # kept apart:
    analysis_runs = [r for r in _runs(client, EXP + " · analysis") if "labrun.analysis" in r.data.tags]
    assert len(analysis_runs) >= 2
    frame = query.runs_frame(EXP)
    assert not set(frame["run_id"]) & {r.info.run_id for r in analysis_runs}


def test_group_by_a_param_best_value_and_local_output(toy, capsys, tmp_path):
    root, uri, client = toy
    code, out, err = _cli(["analyze", "-e", EXP, "-m", METRIC, "--group-by", "train.optimizer", "--value", "best",
                           "--no-log", "--out", str(tmp_path / "out"), "--bootstrap", "500"], capsys)
    assert code == 0, err
    assert re.search(r"^train\.optimizer=adam\s+3\s+\S+ ± ", out, re.M) and re.search(r"^train\.optimizer=sgd\s+3\s+\S+ ± ", out, re.M)
    assert "analysis run" not in out
    frame = pd.read_csv(tmp_path / "out" / "runs.csv")
    assert len(frame) == 6 and set(frame["group"]) == {"train.optimizer=adam", "train.optimizer=sgd"}
    doc = json.loads((tmp_path / "out" / "stats.json").read_text())
    best = frame.groupby("group")[f"best.{METRIC}"].agg(["mean", "std"])
    for g in doc["groups"]:
        assert g["mean"] == pytest.approx(best.loc[g["group"], "mean"])
        assert g["std"] == pytest.approx(best.loc[g["group"], "std"])    # ddof=1 as pandas


@pytest.mark.parametrize("argv, message", [
    (["-e", EXP, "-m", "metric.mse.vall"], "metric 'metric.mse.vall' was not logged.*did you mean metric.mse.val"),
    (["-e", "empty", "-m", METRIC], "experiment empty has no task runs"),
    (["-e", "nope", "-m", METRIC], "no experiment named 'nope'"),
    (["-e", EXP, "-m", METRIC, "--filter", "labrun.seed=0"], "single seed"),
    (["-e", EXP, "-m", METRIC, "--group-by", "train.optimiser"], "unknown group key 'train.optimiser'.*train.optimizer"),
    (["-e", EXP, "-m", METRIC, "--filter", "train.lr>>1"], "bad filter"),
    (["-e", EXP, "-m", METRIC, "--filter", "labrun.method=adamw"], "no runs of toy-seeds match"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(toy, capsys, argv, message):
    root, uri, client = toy
    before = len(_runs(client))
    code, out, err = _cli(["analyze", *argv], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("labrun analyze: error: "), err
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in err + out
    assert len(_runs(client)) == before


@pytest.mark.slow
def test_bad_input_in_a_real_subprocess(toy):
    root, uri, _ = toy
    proc = run_cli([PYTHON, "-m", "labrun", "analyze", "--experiment", EXP, "--metric", "metric.nope"],
                   env_extra={"MLFLOW_TRACKING_URI": uri}, cwd=root)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "metric 'metric.nope' was not logged" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_mlflow_run_id_is_adopted(toy, capsys, monkeypatch):
    root, uri, client = toy
    exp_id = client.get_experiment_by_name(EXP).experiment_id
    made = client.create_run(exp_id, tags={"mlflow.source.type": "PROJECT"}).info.run_id   # as `mlflow run` does
    monkeypatch.setenv("MLFLOW_RUN_ID", made)
    before = len(_runs(client))
    code, out, err = _cli(["analyze", "-e", EXP, "-m", METRIC, "--no-curves"], capsys)
    assert code == 0, err
    assert f"analysis run {made}" in out and len(_runs(client)) == before
    assert client.get_run(made).data.tags["labrun.analysis"] == METRIC
    assert "table.md" in {a.path for a in client.list_artifacts(made)}


def test_export_csv_parquet_and_curves(toy, capsys, tmp_path):
    root, uri, client = toy
    code, out, err = _cli(["export", "-e", EXP, "--out", str(tmp_path / "csv"), "--curves"], capsys)
    assert code == 0, err
    summary = pd.read_csv(tmp_path / "csv" / "summary.csv")
    frame = query.runs_frame(EXP)
    filled = [c for c in frame.columns if (frame[c].notna() & frame[c].astype(str).ne("")).any()
              or (c.startswith(("final.", "best.")) and frame["step." + c.split(".", 1)[1]].notna().any())]
    assert list(summary.columns) == filled  # a column no run has a value in is left out
    assert "parent_run_id" in frame.columns and "parent_run_id" not in summary.columns
    assert len(summary) == 7 and (summary["status"] == "FAILED").sum() == 1
    curves = pd.read_csv(tmp_path / "csv" / "curves.csv")
    assert list(curves.columns) == ["run_id", "metric", "step", "value", "timestamp"]
    assert set(curves.loc[curves["metric"] == METRIC, "step"]) == {10, 20, 30}
    npz = np.load(tmp_path / "csv" / "curves.npz")
    assert len(npz["value"]) == len(curves) and npz["run_id"].dtype.kind == "U"
    code, _, err = _cli(["export", "-e", EXP, "--format", "parquet", "--out", str(tmp_path / "pq")], capsys)
    assert code == 0, err
    pq = pd.read_parquet(tmp_path / "pq" / "summary.parquet")
    assert list(pq.columns) == filled and len(pq) == 7
    code, _, err = _cli(["export", "-e", EXP, "--keep-empty-columns", "--out", str(tmp_path / "all")], capsys)
    assert list(pd.read_csv(tmp_path / "all" / "summary.csv").columns) == list(frame.columns)
    code, _, err = _cli(["export", "-e", "empty", "--out", str(tmp_path / "none")], capsys)
    assert code == 2 and "has no task runs to export" in err


def test_help_explains(capsys):
    from labrun.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["analyze", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "Kendall's W" in text and "--group-by" in text and "--direction" in text


@pytest.mark.slow
def test_mlflow_run_analyze_entry_point(toy):
    """`mlflow run . -e analyze` (the MLproject entry point) adopts MLflow's run and logs to it."""
    root, uri, client = toy
    proc = run_cli([PYTHON, "-m", "mlflow", "run", str(REPO), "-e", "analyze", "--env-manager", "local",
                    "--experiment-name", EXP, "-P", f"experiment={EXP}", "-P", f"metric={METRIC}"],
                   env_extra={"MLFLOW_TRACKING_URI": uri}, cwd=root, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run_id = re.search(r"analysis run ([0-9a-f]{32})", proc.stdout).group(1)
    run = client.get_run(run_id)
    assert run.data.params.get("metric") == METRIC and run.data.tags["labrun.analysis"] == METRIC
