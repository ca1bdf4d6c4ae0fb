"""The Optuna driver: a study over any entry point, one child run per trial and seed.

Unlike Optuna's MLflowCallback, every trial's runs nest under one parent run per study,
workers on a shared storage split ``n_trials`` between them (a trial number is assigned
by the storage, so no trial is evaluated twice), a killed worker's trial is failed by its
stopped heartbeat and retried by the next worker, and a seed's run that already FINISHED
with the same fingerprint is read back instead of being trained again.
"""
from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sweeps.launchers.base import launcher_class, make_launcher
from sweeps.progress import QuietPipe
from sweeps.spec import StudySpec, dump
from sweeps.study._heartbeat import reap_stale
from sweeps.study._parent import close_study_parent, open_study_parent
from sweeps.study._space import make_sampler
from sweeps.study._target import study_target
from sweeps.study._storage import check_storage_apart, make_storage, safe_url
from sweeps.study._trial import CellFailed, Surplus, TrialRunner
from tracking import env
from tracking import tags as T
from tracking.config import ConfigError
from tracking.exits import EXIT_CONFIG, EXIT_FINISHED, EXIT_SIGINT, EXIT_SIGTERM
from tracking.signals import Terminated, sigterm_as_exception


def run_study(spec: StudySpec, raw: dict[str, Any]) -> int:
    """Create or join the study and work on it until it holds ``n_trials`` trials.

    Returns EXIT_FINISHED, EXIT_SIGINT (interrupted: run it again to go on) or EXIT_CONFIG
    when the objective metric is never logged (every further trial would fail the same way).
    The target is a labrun task or, with ``project:``, any MLflow project's entry point.
    """
    from tracking import store

    target = study_target(spec)  # the space checked against the task or the MLproject
    if target.module:
        launcher_class(target.launcher).prewarm(target.module)
    if spec.pruner.type != "none" and len(spec.objectives) > 1:
        raise ConfigError("pruning needs a single objective; set pruner.type: none for several")
    check_storage_apart(spec.storage, store.tracking_uri())
    study = open_study(spec)

    env.quiet()
    client = store.client()
    exp_name = spec.experiment or spec.entry
    exp_id = store.experiment_id(exp_name, description=spec.description or None)
    parent_id = open_study_parent(study, client, exp_id, spec)
    stdout, sys.stdout = sys.stdout, QuietPipe(sys.stdout)  # a reader gone (| head) does not stop trials
    try:  # SIGTERM (a scheduler, `kill`) takes Ctrl-C's path: the trial ends KILLED, the parent closes
        with sigterm_as_exception():
            return _work(spec, raw, study, target, client, exp_name, exp_id, parent_id)
    except BaseException as exc:  # the study itself failed (not a trial): never leave the parent RUNNING
        _end_parent(client, parent_id, exc)
        raise
    finally:
        sys.stdout = stdout


def _work(spec: StudySpec, raw: dict[str, Any], study: Any, target: Any, client: Any, exp_name: str,
          exp_id: str, parent_id: str) -> int:
    """The study's trials, once its parent run exists; closes the parent."""
    client.log_text(parent_id, dump(raw), "study.yaml")
    done_before = len(study.get_trials(deepcopy=False, states=_counted()))
    from tracking import views

    o = spec.objectives[0]
    view = views.save_sweep_view(client, exp_id, spec.name or "study", objective=o.metric,
                                 ascending=o.direction == "minimize", params=list(spec.space))
    print(f"study {spec.name!r} on {safe_url(spec.storage)}: {done_before}/{spec.n_trials} trials done; "
          f"parent run {parent_id} in experiment {exp_name!r}\n{target.note()}"
          f"  runs table: {views.experiment_url(exp_id, view)}\n"
          f"  watch it: optuna-dashboard {safe_url(spec.storage)}", flush=True)
    launcher = make_launcher(target.launcher, 1, module=target.module,
                             options=spec.launcher_options() if target.launcher == spec.launcher else None)
    logs = Path(tempfile.mkdtemp(prefix=f"labrun-study-{spec.name}-"))
    runner = TrialRunner(spec, target, client, exp_name, exp_id, parent_id, launcher, logs)
    try:
        interrupted = _optimize(study, runner) if done_before < spec.n_trials else None
    finally:
        launcher.close()
    if runner.kept_logs:
        print(f"logs of the failed trials' processes: {logs}", file=sys.stderr)
    else:  # each run keeps its own logs/train.log; these copies are not needed
        import shutil

        shutil.rmtree(logs, ignore_errors=True)
    close_study_parent(study, client, parent_id, spec, interrupted is not None)
    ran = [r for t in study.get_trials(deepcopy=False) for r in t.user_attrs.get("mlflow_run_ids", [])]
    views.save_sweep_view(client, exp_id, spec.name or "study", objective=o.metric,  # with every metric
                          ascending=o.direction == "minimize", params=list(spec.space), run_ids=ran)
    if runner.metric_error:
        print(f"labrun optimize: error: {runner.metric_error}", file=sys.stderr)
        return EXIT_CONFIG
    if interrupted:
        return EXIT_SIGTERM if isinstance(interrupted, Terminated) else EXIT_SIGINT
    return EXIT_FINISHED


def _end_parent(client: Any, parent_id: str, exc: BaseException) -> None:
    """FAILED with the reason (KILLED for an interrupt), unless the study already closed it."""
    from sweeps.parent import end_if_running

    status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
    end_if_running(client, parent_id, status, f"{type(exc).__name__}: {exc}", "study's parent run")


def _counted() -> tuple[Any, ...]:
    """The trial states that count towards ``n_trials``."""
    from optuna.trial import TrialState

    return (TrialState.COMPLETE, TrialState.PRUNED)


def open_study(spec: StudySpec) -> Any:
    """Create the study or join it; one that exists with other directions is a ConfigError."""
    import optuna

    from sweeps.pruning import make_pruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(spec)
    directions = [o.direction for o in spec.objectives]
    try:
        study = optuna.create_study(study_name=spec.name, storage=storage, directions=directions,
                                    pruner=make_pruner(spec.pruner), load_if_exists=True)
    except Exception as exc:  # e.g. an unreachable server
        raise ConfigError(f"cannot open study {spec.name!r} in {safe_url(spec.storage)}: "
                          f"{str(exc).splitlines()[0]}") from None
    if spec.description and study.user_attrs.get("description") != spec.description:
        study.set_user_attr("description", spec.description)
    from tracking.views import name_objectives

    name_objectives(study, [o.metric for o in spec.objectives])
    existing = [d.name.lower() for d in study.directions]
    if existing != directions:
        raise ConfigError(f"study {spec.name!r} already exists with directions {existing}, the spec "
                          f"asks for {directions}; use another study name")
    # A seeded sampler is seeded per trial (study seed + trial number): workers that start
    # together, or a resumed study, never draw in lockstep (_space.trial_seed).
    study.sampler = make_sampler(spec, spec.sampler.seed)
    return study


def _optimize(study: Any, runner: TrialRunner) -> KeyboardInterrupt | None:
    """Run trials until the study holds ``n_trials``; the interrupt when interrupted (Ctrl-C,
    or SIGTERM as :class:`~tracking.signals.Terminated`), else None.

    One trial at a time, asking for one only while the budget is not taken: a worker that
    finds the rest of the budget held by other workers' RUNNING trials waits for them, and
    when one's heartbeat goes stale (its worker was killed) fails it so that Optuna's retry
    callback queues it again, for this worker or another; its MLflow runs end KILLED. No
    trial is recorded for a budget a worker did not use.
    """
    spec = runner.spec
    callbacks = [_reporter(runner), _fail_guard(spec, runner)]
    said = ""
    quiet = _NoInterruptTraces()
    handlers = logging.getLogger("optuna").handlers  # a logger's own filter misses its children's records
    for h in handlers:
        h.addFilter(quiet)
    try:
        while not runner.stopped:
            counted, running = _budget(study)
            if counted >= spec.n_trials:
                return None
            if counted + len(running) >= spec.n_trials:
                line = (f"waiting for {len(running)} trial(s) of other workers (RUNNING: "
                        f"{', '.join(str(t.number) for t in running)}); a killed worker's trial is retried "
                        f"after {2 * spec.heartbeat_s} s without a heartbeat")
                if line != said:
                    print(line, flush=True)
                    said = line
                reap_stale(study, runner, running)
                time.sleep(min(5.0, spec.heartbeat_s / 2))
                continue
            said = ""
            study.optimize(runner, n_trials=1, catch=(CellFailed, Surplus), callbacks=callbacks,
                           gc_after_trial=False)
    except KeyboardInterrupt as exc:
        runner.launcher.stop()  # the running cell ends KILLED, its checkpoints kept
        runner.launcher.poll()
        print(f"interrupted ({exc or 'Ctrl-C'}): the running trial ends KILLED and is tried again when "
              f"the study goes on (run the same command)", file=sys.stderr)
        return exc
    finally:
        for h in handlers:
            h.removeFilter(quiet)
    return None


class _NoInterruptTraces(logging.Filter):
    """Optuna logs an interrupted trial as a failure with the interrupt's traceback (every
    frame of the wait), then once more; the study says it in one line instead."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = False

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, KeyboardInterrupt) or "KeyboardInterrupt" in record.getMessage() \
                or "Terminated(" in record.getMessage():
            self.dropped = True
            return False
        return not (self.dropped and "failed with value None" in record.getMessage())


def _budget(study: Any) -> tuple[int, list[Any]]:
    """Trials that count (COMPLETE, PRUNED) and the RUNNING ones (other workers' here)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                      TrialState.RUNNING))
    counted = sum(t.state != TrialState.RUNNING for t in trials)
    return counted, [t for t in trials if t.state == TrialState.RUNNING]


def _reporter(runner: TrialRunner) -> Any:
    """One line per trial; a metric the task never logs stops the study (no trial could work)."""
    from optuna.trial import TrialState

    def report(study: Any, trial: Any) -> None:
        if trial.user_attrs.get(T.SURPLUS):
            return
        values = trial.values or []
        value = ", ".join(f"{v:.6g}" for v in values) or "-"
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in trial.params.items())
        line = f"trial {trial.number}: {trial.state.name} value={value}  {params}"
        if trial.state == TrialState.FAIL and runner.metric_error:
            line += f"\n  {runner.metric_error}"
        print(line, flush=True)
        if runner.metric_error:
            runner.stopped = True
    return report


def _fail_guard(spec: StudySpec, runner: TrialRunner) -> Any:
    """Stop a worker whose trials keep failing instead of burning the budget forever."""
    from optuna.trial import TrialState

    def guard(study: Any, trial: Any) -> None:
        failed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                  if not t.user_attrs.get(T.SURPLUS)]
        if len(failed) >= max(3, spec.n_trials):
            print(f"stopping: {len(failed)} trials failed (see their runs' labrun.failure tags)",
                  file=sys.stderr, flush=True)
            runner.stopped = True
    return guard
