"""The ired entry point end to end on a real SQLite store: strategies, feedforward,
bad configs, `labrun run`, `mlflow run`, and resume after a SIGKILL.

Runs happen in-process where the point is not the process boundary (it saves ~10 s of
imports per run); bad configs, `mlflow run` and the killed run are real subprocesses."""
from __future__ import annotations

import json
import os

import pytest

from tests.helpers import PYTHON, REPO, all_runs, run_cli, sigkill_after_checkpoint

# Tiny but complete: every metric, evaluation, probe and component still runs.
TINY = ["--config", "quick", "--set", "data.n=4", "--set", "data.n_val=32", "--set", "data.n_test=32",
        "--set", "data.mean_floor_samples=200", "--set", "model.hidden=16", "--set", "model.time_dim=8",
        "--set", "train.steps=20", "--set", "train.eval_every=10", "--set", "train.batch_size=16",
        "--set", "train.train_eval_size=16", "--set", "checkpoint.every=10",
        "--set", "diagnostics.conditioning.samples=16", "--set", "diagnostics.energy_gap.samples=16",
        "--set", "diffusion.inference_opt_steps=2"]

STEP_METRICS = {"loss.total", "diag.grad_norm", "diag.grad_norm_clipped"}
ENERGY_METRICS = {"loss.denoise", "loss.energy", "diag.energy_gap", "diag.false_negatives.fraction",
                  "diag.mining.diversity", "diag.conditioning.pos.log10_cond",
                  "diag.conditioning.neg.log10_cond"}
EVAL_METRICS = {"metric.mse.train", "metric.mse.val", "metric.mse.test", "metric.mse.test_ood"}
COMPONENTS = ("diagnostics.conditioning", "diagnostics.energy_gap", "diagnostics.false_negatives",
              "mining", "reference.floors", "training.early_stopping")


def _summary(client, run_id):
    path = client.download_artifacts(run_id, "summary.json", str(client.root / f"dl-{run_id}"))
    with open(path) as fh:
        return json.load(fh)


def _check_run(client, run, method, *, mined: bool, energy: bool = True):
    assert run.info.status == "FINISHED"
    tags, metrics = run.data.tags, run.data.metrics
    assert tags["labrun.task"] == "ired" and tags["labrun.method"] == method
    assert STEP_METRICS | EVAL_METRICS <= set(metrics)
    history = client.get_metric_history(run.info.run_id, "metric.mse.val")
    assert sorted(m.step for m in history) == [10, 20]
    assert len(client.get_metric_history(run.info.run_id, "loss.total")) == 20
    summary = _summary(client, run.info.run_id)
    comps = summary["components"]
    assert set(COMPONENTS) <= set(comps)
    assert comps["reference.floors"]["status"] == "success"
    assert comps["training.early_stopping"]["status"] == "disabled"
    assert "enable" in comps["training.early_stopping"] and comps["training.early_stopping"]["enable"]
    if energy:
        assert ENERGY_METRICS <= set(metrics)
        for name in ("diagnostics.conditioning", "diagnostics.energy_gap", "diagnostics.false_negatives"):
            assert comps[name]["status"] == "success", comps[name]
        assert "figures/conditioning_hist.png" in comps["diagnostics.conditioning"]["figures"]
        assert comps["mining"]["status"] == ("success" if mined else "disabled")
        assert ("diag.mining.grad_norm" in metrics) == (method in ("adversarial", "mixed"))
    else:
        assert not ENERGY_METRICS & set(metrics)
        for name in ("diagnostics.conditioning", "diagnostics.energy_gap", "diagnostics.false_negatives",
                     "mining"):
            assert comps[name]["status"] == "disabled" and "feedforward" in comps[name]["reason"]
            assert comps[name]["enable"] == "--set model.kind=energy"
    # The model must be a model: finite, and the floors recorded beside it.
    assert 0 < metrics["metric.mse.test"] < 10 and metrics["metric.floor.mean.test"] > 0
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert "checkpoints/best" in arts and "checkpoints/cp_20.ptz" in arts


@pytest.mark.parametrize("strategy", ["none", "adversarial"])
def test_strategy_runs_end_to_end(store, strategy):
    from projects.ired.train import main

    main(TINY + ["--set", f"mining.strategy={strategy}"])
    (run,) = all_runs(store)
    _check_run(store, run, strategy, mined=strategy != "none")
    assert run.data.params["mining.strategy"] == strategy


def test_feedforward_is_tagged_feedforward_and_skips_mining(store):
    from projects.ired.train import main

    main(TINY + ["--set", "model.kind=feedforward", "--set", "diagnostics.false_negatives.enabled=false"])
    (run,) = all_runs(store)
    _check_run(store, run, "feedforward", mined=False, energy=False)


def test_disabled_diagnostic_says_why_and_how(store):
    from projects.ired.train import main

    main(TINY + ["--set", "mining.strategy=random", "--set", "diagnostics.conditioning.enabled=false",
                 "--set", "train.early_stopping_patience=1", "--set", "train.steps=30"])
    (run,) = all_runs(store)
    comps = _summary(store, run.info.run_id)["components"]
    c = comps["diagnostics.conditioning"]
    assert c["status"] == "disabled" and "enabled is false" in c["reason"]
    assert c["enable"] == "--set diagnostics.conditioning.enabled=true"
    assert "diag.conditioning.pos.log10_cond" not in run.data.metrics
    es = comps["training.early_stopping"]
    assert es["status"] == "success"
    # patience 1: training stops at the first evaluation whose val MSE is no better than the best
    vals = sorted((m.step, m.value) for m in store.get_metric_history(run.info.run_id, "metric.mse.val"))
    best, expected = float("inf"), None
    for step, value in vals:
        if value >= best:
            expected = step
            break
        best = value
    assert es["data"]["stopped_at"] == expected and run.data.tags["labrun.method"] == "random"
    assert vals[-1][0] == (expected or 30)  # nothing was evaluated after the stop


@pytest.mark.parametrize("override, expected", [
    ("mining.strategy=hard", "mining.strategy expects one of 'none' | 'random' | 'adversarial' | 'mixed'"),
    ("mining.opt_steps=-1", "mining.opt_steps"),
    ("train.steps=-5", "train.steps"),
    ("mining.adversarial_fraction=1.5", "mining.adversarial_fraction"),
])
def test_bad_config_is_one_line_exit_2_and_no_run(store, override, expected):
    proc = run_cli([PYTHON, "-m", "projects.ired.train", "--config", "quick", "--set", override],
                   cwd=store.root)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert all_runs(store) == []


def test_labrun_cli_runs_mixed_and_rejects_bad_fraction(store, capsys):
    from labrun.cli import main as labrun

    with pytest.raises(SystemExit) as exc:
        labrun(["run", "ired", "--set", "mining.adversarial_fraction=-0.1"])
    assert exc.value.code == 2 and "mining.adversarial_fraction" in capsys.readouterr().err
    assert all_runs(store) == []
    labrun(["run", "ired", *TINY, "--set", "mining.strategy=mixed"])
    (run,) = all_runs(store)
    _check_run(store, run, "mixed", mined=True)


@pytest.mark.slow
def test_mlflow_run_entry_point_with_random(store):
    params = [a for pair in zip(TINY[2::2], TINY[3::2]) for a in ("-P", pair[1])]
    env = {"PATH": os.path.dirname(PYTHON) + os.pathsep + os.environ.get("PATH", "")}
    proc = run_cli([PYTHON, "-m", "mlflow", "run", str(REPO), "-e", "ired", "--env-manager", "local",
                    "--experiment-name", "ired", "-P", "config=quick", *params,
                    "-P", "mining.strategy=random"], cwd=store.root, env_extra=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = all_runs(store)
    _check_run(store, run, "random", mined=True)


def _metric_series(client, run_id):
    run = client.get_run(run_id)
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k))
            for k in run.data.metrics if not k.startswith("perf.")}


@pytest.mark.slow
def test_resume_after_sigkill_reproduces_the_uninterrupted_run(store):
    from projects.ired.train import main

    args = TINY + ["--set", "mining.strategy=adversarial", "--set", "train.steps=30",
                   "--set", "train.num_threads=1"]
    victim_id, reference_id = sigkill_after_checkpoint(
        store, "projects.ired.train", [*args, "--set", "train.sleep_s=0.25"], "cp_10.ptz",
        reference=lambda: main(args))
    victim = store.get_run(victim_id)  # killed hard: nothing ran on exit, so the resume closed it
    assert victim.info.status == "KILLED" and victim.data.tags["labrun.failure"].startswith("stale")
    main(["--resume", victim_id, "--set", "train.sleep_s=0"])
    (resumed,) = [r for r in all_runs(store) if r.data.tags.get("labrun.resumed_from") == victim_id]
    assert int(resumed.data.tags["labrun.resumed_step"]) in (10, 20)
    want, got = _metric_series(store, reference_id), _metric_series(store, resumed.info.run_id)
    assert set(want) == set(got)
    for key in want:
        assert got[key] == want[key], key
