"""The task-side API: ``run.steps`` (resume point, checkpoint after logging, early stop),
``TrainerState``, component gates, observers passed to ``start_run``, execution fields."""
from __future__ import annotations

import json
import tempfile
from typing import ClassVar

import pytest

from tests.helpers import all_runs
from tracking import (ComponentResult, Components, Gate, Section, TaskConfig, TrainerState,
                      execution, load_config, start_run)
from tracking.components import disabled_by, evaluate
from tracking.config import fingerprint, group_key, resolve_config
from tracking.observers import RunObserver


class LoopTrain(Section):
    steps: int = 10
    stop_at: int | None = None
    fail_at: int | None = None
    sleep_s: float = execution(0.0)


class LoopConfig(TaskConfig):
    task: ClassVar[str] = "looptest"
    train: LoopTrain = LoopTrain()


class Counter(TrainerState):
    def __init__(self) -> None:
        self.seen: list[int] = []


def _train(argv: list[str]) -> str:
    """A loop whose only state is a generator and a TrainerState; returns the run id."""
    import torch

    cfg = load_config(LoopConfig, argv)
    with start_run(cfg) as run:
        gen = torch.Generator().manual_seed(cfg.seed)
        counter = Counter()
        run.track_state(data=gen, trainer=counter)
        loop = run.steps(cfg.train.steps)
        for step in loop:
            if cfg.train.fail_at == step:
                raise RuntimeError("injected")
            counter.seen.append(step)
            run.log_metrics({"loss.total": float(torch.rand(1, generator=gen)),
                             "diag.seen": float(len(counter.seen))}, step=step)
            if cfg.train.stop_at == step:
                loop.stop("converged")
        run.results["seen"] = list(counter.seen)
        run.results["stopped_at"] = loop.stopped_at
        return run.run_id


def _series(store, run_id, key="loss.total"):
    return [(m.step, m.value) for m in sorted(store.get_metric_history(run_id, key), key=lambda m: m.step)]


def _summary(store, run_id):
    path = store.download_artifacts(run_id, "summary.json", str(store.root / f"s-{run_id[:6]}"))
    return json.loads(open(path).read())


def test_resume_after_a_failure_continues_after_the_checkpointed_step(store):
    full = _train(["--set", "train.steps=10", "--set", "checkpoint.every=4"])
    with pytest.raises(RuntimeError):
        _train(["--set", "train.steps=10", "--set", "checkpoint.every=4", "--set", "train.fail_at=7"])
    failed = [r for r in all_runs(store) if r.info.status == "FAILED"][0].info.run_id
    # the checkpoint at step 4 was written after step 4's metrics: the store has steps 1..6
    assert [s for s, _ in _series(store, failed)] == [1, 2, 3, 4, 5, 6]
    resumed = _train(["--resume", failed, "--set", "train.fail_at=null"])
    assert _series(store, resumed) == _series(store, full)  # same future, bit for bit
    assert _summary(store, resumed)["results"]["seen"] == list(range(1, 11))  # TrainerState restored
    assert _summary(store, resumed)["resumed_step"] == 4


def test_early_stop_is_checkpointed_and_a_resume_trains_no_further(store):
    first = _train(["--set", "train.steps=10", "--set", "train.stop_at=3"])
    assert [s for s, _ in _series(store, first)] == [1, 2, 3]
    assert _summary(store, first)["checkpoints"] == ["cp_3.ptz"]
    again = _train(["--resume", first])
    assert [s for s, _ in _series(store, again)] == [1, 2, 3]  # the copied history, nothing new
    assert _summary(store, again)["results"]["stopped_at"] == 3


def test_a_failed_step_leaves_no_checkpoint_of_itself(store):
    with pytest.raises(RuntimeError):
        _train(["--set", "train.steps=10", "--set", "checkpoint.every=1", "--set", "train.fail_at=5"])
    (run,) = all_runs(store)
    assert _summary(store, run.info.run_id)["checkpoints"][-1] == "cp_4.ptz"


def test_steps_need_tracked_state(store):
    cfg = load_config(LoopConfig, [])
    with pytest.raises(RuntimeError, match="track_state"):
        with start_run(cfg) as run:
            list(run.steps(3))
    (run,) = all_runs(store)
    assert run.info.status == "FAILED"


def test_observers_passed_to_start_run_see_the_run(store):
    seen = []

    class Spy(RunObserver):
        def started(self, run):
            seen.append("started")

        def metrics(self, run, metrics, step):
            seen.append(step)

        def completed(self, run, outcome):
            seen.append(outcome)

    cfg = load_config(LoopConfig, [])
    with start_run(cfg, observers=[Spy()]) as run:
        run.log_metrics({"loss.total": 1.0}, step=1)
        run.metrics.flush()
    assert seen[0] == "started" and 1 in seen and seen[-1] == "FINISHED"


def test_a_run_whose_handle_cannot_be_built_ends_failed_not_running(store, monkeypatch):
    cfg = load_config(LoopConfig, [])
    monkeypatch.setattr(tempfile, "tempdir", str(store.root / "no" / "such" / "dir"))
    with pytest.raises(FileNotFoundError):
        with start_run(cfg):
            pass
    (run,) = all_runs(store)
    assert run.info.status == "FAILED"
    assert run.data.tags["labrun.failure"].startswith("FileNotFoundError")


def test_execution_fields_leave_fingerprint_and_group_alone():
    base = resolve_config(LoopConfig, None, [])
    slower = resolve_config(LoopConfig, None, ["checkpoint.every=7", "checkpoint.keep=5",
                                               "train.sleep_s=0.5"])
    other = resolve_config(LoopConfig, None, ["train.steps=11"])
    assert fingerprint(base) == fingerprint(slower) and group_key(base) == group_key(slower)
    assert fingerprint(base) != fingerprint(other)
    assert group_key(base) == group_key(resolve_config(LoopConfig, None, ["seed=3"]))


def test_execution_fields_are_still_logged_as_params(store):
    rid = _train(["--set", "checkpoint.every=3", "--set", "train.sleep_s=0.0"])
    params = store.get_run(rid).data.params
    assert params["checkpoint.every"] == "3" and params["train.sleep_s"] == "0.0"


def test_gates_report_disabled_with_the_override_and_skip_the_provider():
    called = []
    comps = Components()

    @comps.provider("probe", enabled_by="train.stop_at", why="needs a stop")
    def probe(ctx):
        called.append(ctx)
        return ComponentResult.success({"ok": 1})

    @comps.provider("two", gates=[Gate(lambda cfg: cfg.seed == 0, "seed is 0", "--set seed=1")])
    def two(ctx):
        raise ValueError("boom")

    off = resolve_config(LoopConfig, None, [])
    on = resolve_config(LoopConfig, None, ["train.stop_at=2", "seed=1"])
    r = evaluate(comps.resolve("probe", off, "ctx"))
    assert r.status == "disabled" and r.reason == "train.stop_at is false (needs a stop)"
    assert r.enable == "--set train.stop_at=true" and called == []
    assert evaluate(comps.resolve("probe", on, "ctx")).status == "success" and called == ["ctx"]
    assert evaluate(comps.resolve("two", off, None)).enable == "--set seed=1"
    assert evaluate(comps.resolve("two", on, None)).status == "failed"  # a raising provider
    assert comps.names == ["probe", "two"]
    d = disabled_by("train.early_stopping_patience", 0, enable_value=10)
    assert d.reason == "train.early_stopping_patience is 0"
    assert d.enable == "--set train.early_stopping_patience=10"
