"""Divergence is an outcome: a non-finite training loss ends the run with a clear status.

Real toy runs (in-process, a real SQLite store): ``train.lr=1e12`` makes ``loss.total``
infinite at step 2 on every seed.
"""
from __future__ import annotations

import pytest

from tests.helpers import PYTHON, all_runs, run_cli

SHORT = ["--config", "quick", "--set", "train.steps=12", "--set", "train.eval_every=4",
         "--set", "checkpoint.every=1"]
BLOW_UP = ["--set", "train.lr=1e12"]


def _toy(argv):
    from projects.toy.train import main

    main(SHORT + argv)


def _only_run(store):
    runs = all_runs(store)
    assert len(runs) == 1
    return runs[0]


def test_a_nonfinite_loss_fails_the_run_at_that_step_and_keeps_the_last_good_checkpoint(store):
    with pytest.raises(SystemExit) as exit_info:
        _toy(BLOW_UP)
    assert exit_info.value.code == 1
    run = _only_run(store)
    failure = run.data.tags["labrun.failure"]
    assert run.info.status == "FAILED"
    assert failure.startswith("NonFinite: loss.total is ") and " at step 2" in failure
    kept = {a.path for a in store.list_artifacts(run.info.run_id, "checkpoints")}
    assert kept == {"checkpoints/cp_1.ptz"}  # the step that diverged wrote none
    steps = [m.step for m in store.get_metric_history(run.info.run_id, "loss.total")]
    assert max(steps) == 2  # logged (the non-finite value is evidence), then nothing more
    report = store.download_artifacts(run.info.run_id, "REPORT.md")
    assert "Training diverged" in open(report).read()


@pytest.mark.slow
def test_the_cli_says_it_in_one_line_without_a_traceback(store):
    proc = run_cli([PYTHON, "-m", "projects.toy.train", *SHORT, *BLOW_UP])
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("labrun: run ")]
    assert len(lines) == 1 and "FAILED (NonFinite: loss.total is" in lines[0]


def test_record_mode_tags_the_step_stops_training_and_finishes(store):
    _toy(BLOW_UP + ["--set", "divergence.on_nonfinite=record"])
    run = _only_run(store)
    assert run.info.status == "FINISHED"
    assert run.data.tags["labrun.diverged"] == "2"
    steps = [m.step for m in store.get_metric_history(run.info.run_id, "loss.total")]
    assert max(steps) == 2  # training stopped at the divergence
    assert "labrun.failure" not in run.data.tags


def test_a_finite_run_is_untouched_and_the_setting_is_not_part_of_the_fingerprint(store):
    _toy(["--set", "divergence.on_nonfinite=record", "--seed", "3"])
    _toy(["--seed", "3", "--experiment", "other"])
    a, b = all_runs(store)
    assert {a.info.status, b.info.status} == {"FINISHED"}
    assert "labrun.diverged" not in a.data.tags and "labrun.diverged" not in b.data.tags
    assert a.data.tags["labrun.fingerprint"] == b.data.tags["labrun.fingerprint"]


def test_watched_metrics_are_configurable(store):
    with pytest.raises(SystemExit):  # loss.total (inf at step 2) is no longer watched
        _toy(BLOW_UP + ["--set", "divergence.metrics=[metric.mse.val]"])
    failure = _only_run(store).data.tags["labrun.failure"]
    assert failure.startswith("NonFinite: metric.mse.val is nan at step 4")  # its first evaluation


def test_analyze_counts_diverged_runs_per_group_apart_from_the_statistics(store):
    from analysis import report

    for seed in (0, 1, 2):
        _toy(["--seed", str(seed), "--experiment", "dv", "--set", "train.optimizer=adam"])
    for seed in (0, 1):
        _toy(BLOW_UP + ["--seed", str(seed), "--experiment", "dv", "--set", "train.optimizer=sgd",
                        "--set", "divergence.on_nonfinite=record"])
    for seed in (2, 3):
        _toy(["--seed", str(seed), "--experiment", "dv", "--set", "train.optimizer=sgd"])
    with pytest.raises(SystemExit):
        _toy(BLOW_UP + ["--seed", "4", "--experiment", "dv", "--set", "train.optimizer=sgd"])
    res = report.analyze(report.AnalyzeOptions(experiments=["dv"], metric="loss.total", log_run=False,
                                               curves=False, n_boot=100, tracking_uri=store.uri,
                                               group_by=["params.train.optimizer"]))
    assert res.excluded["diverged runs (non-finite training loss; per group in the warnings)"] == 3
    assert "failed run" not in " ".join(res.excluded)  # the FAILED one is counted as diverged
    assert dict(zip(res.summary["group"], res.summary["n"])) == {"train.optimizer=adam": 3,
                                                                 "train.optimizer=sgd": 2}
    line = next(w for w in res.warnings if w.startswith("diverged runs"))
    assert "train.optimizer=sgd: 3 of 5" in line and "adam" not in line
