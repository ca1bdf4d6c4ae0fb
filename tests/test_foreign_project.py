"""An MLflow project labrun did not write (examples/elasticnet: plain mlflow calls), swept
through `mlflow run` with checked -P parameters, resumed after a kill, and analysed."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import textwrap
import time

import pytest

from tests.helpers import PYTHON, REPO, all_runs, run_cli

EXAMPLE = REPO / "examples" / "elasticnet"


def _project(tmp_path):
    """A copy of the example outside this checkout: foreign in every sense."""
    dest = tmp_path / "elasticnet"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def _spec(tmp_path, body: str):
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def _sweep(spec, cwd, *extra):
    return run_cli([PYTHON, "-m", "labrun", "sweep", str(spec), *extra], cwd=cwd)


@pytest.mark.parametrize("body, says", [
    ("matrix: {alpah: [0.1]}", "declares no parameter 'alpah' in cell {alpah: 0.1}; did you mean: alpha?"),
    ("matrix: {alpha: [0.1, lots]}", "parameter 'alpha' of entry point 'main' in cell {alpha: lots} expects float, got 'lots'"),
    ("seed_param: rng\nseeds: [0, 1]", "seeds need a parameter 'rng'"),
    ("config: quick", "'config' is a labrun task's base YAML"),
])
def test_bad_parameters_exit_2_before_anything_starts(store, tmp_path, body, says):
    project = _project(tmp_path)
    spec = _spec(tmp_path, f"entry: main\nproject: {project}\n{body}\n")
    proc = _sweep(spec, tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr and "Traceback" not in proc.stderr
    assert all_runs(store) == []


def test_unknown_entry_point_names_the_ones_there(store, tmp_path):
    project = _project(tmp_path)
    proc = _sweep(_spec(tmp_path, f"entry: train\nproject: {project}\n"), tmp_path)
    assert proc.returncode == 2 and "has no entry point 'train'; entry points: main" in proc.stderr


@pytest.mark.slow
def test_foreign_sweep_runs_tags_and_skips_on_the_second_call(store, tmp_path):
    project = _project(tmp_path)
    spec = _spec(tmp_path, f"""\
        entry: main
        project: {project}
        name: grid
        experiment: wine
        description: ElasticNet grid.
        matrix: {{alpha: [0.05, 1.0]}}
        overrides: {{l1_ratio: 0.3}}
        parallel: 2
        """)
    first = _sweep(spec, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    runs = all_runs(store, ["wine"])
    cells = [r for r in runs if r.data.tags.get("labrun.kind") != "sweep"]
    parent = next(r for r in runs if r.data.tags.get("labrun.kind") == "sweep")
    assert parent.data.tags["mlflow.note.content"] == "ElasticNet grid."
    assert sorted(r.data.params["alpha"] for r in cells) == ["0.05", "1.0"]
    for r in cells:
        t = r.data.tags
        assert r.info.status == "FINISHED" and "rmse" in r.data.metrics
        assert t["labrun.task"] == "elasticnet.main" and t["labrun.foreign"] == "true"
        assert t["mlflow.parentRunId"] == parent.info.run_id and r.data.params["l1_ratio"] == "0.3"
        assert t["mlflow.note.content"].startswith("ElasticNet grid.") and "alpha=" in t["mlflow.note.content"]
    assert len({r.data.tags["labrun.fingerprint"] for r in cells}) == 2
    again = _sweep(spec, tmp_path, "--dry-run")
    assert again.stdout.count("skip (FINISHED") == 2, again.stdout


def test_analysis_reads_an_experiment_labrun_never_touched(store, tmp_path, capsys):
    """Plain mlflow runs, no labrun tag at all: grouped by params, paired by params.seed."""
    import mlflow

    from labrun.cli import main

    mlflow.set_experiment("plain")
    for seed in range(3):
        for alpha, base in ((0.1, 1.0), (1.0, 2.0)):
            with mlflow.start_run():
                mlflow.log_params({"alpha": alpha, "seed": seed})
                mlflow.log_metric("rmse", base + 0.01 * seed)
    assert main(["analyze", "--experiment", "plain", "--metric", "rmse", "--group-by", "params.alpha",
                 "--seed-key", "params.seed", "--no-log", "--no-curves"]) == 0
    out = capsys.readouterr().out
    assert "alpha=0.1  3" in out and "winner alpha=0.1 is best on 3/3 seeds" in out
    assert main(["export", "--experiment", "plain", "--out", str(tmp_path / "x")]) == 0
    assert (tmp_path / "x" / "summary.csv").read_text().count("\n") == 7


@pytest.mark.slow
def test_killed_foreign_sweep_resumes_without_redoing_finished_cells(store, tmp_path):
    project = _project(tmp_path)
    spec = _spec(tmp_path, f"""\
        entry: main
        project: {project}
        name: slow
        matrix: {{alpha: [0.1, 0.5, 1.0]}}
        overrides: {{sleep_s: 1.5}}
        parallel: 1
        """)
    env = dict(os.environ, PYTHONPATH=str(REPO), PATH=f"{os.path.dirname(PYTHON)}:{os.environ['PATH']}")
    proc = subprocess.Popen([PYTHON, "-m", "labrun", "sweep", str(spec)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 150
    while time.time() < deadline:  # the first cell finished and the second is mid-way
        runs = [r for r in all_runs(store) if "alpha" in r.data.params]
        if {"FINISHED", "RUNNING"} <= {r.info.status for r in runs}:
            break
        time.sleep(0.5)
    time.sleep(2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 130, proc.stdout.read()
    statuses = sorted(r.info.status for r in all_runs(store) if "alpha" in r.data.params)
    assert statuses == ["FINISHED", "KILLED"], (statuses, proc.stdout.read()[-2000:])
    second = _sweep(spec, tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    cells = [r for r in all_runs(store) if "alpha" in r.data.params]
    finished = [r for r in cells if r.info.status == "FINISHED"]
    assert sorted(r.data.params["alpha"] for r in finished) == ["0.1", "0.5", "1.0"]
    assert len(finished) == 3  # the finished one was skipped, not run again
