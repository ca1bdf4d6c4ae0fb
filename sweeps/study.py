"""The Optuna driver: a study over any entry point, one child run per trial and seed.

Unlike Optuna's MLflowCallback, every trial's runs nest under one parent run per study,
workers on a shared storage split ``n_trials`` between them (a trial number is assigned
by the storage, so no trial is evaluated twice), a killed worker's trial is failed by its
stopped heartbeat and retried by the next worker, and a seed's run that already FINISHED
with the same fingerprint is read back instead of being trained again.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sweeps.launchers.base import launcher_class, make_launcher, outcome_of
from sweeps.matrix import Cell, override_text
from sweeps.spec import StudySpec, dump
from tracking import env
from tracking import tags as T
from tracking.config import ConfigError, resolve_config
from tracking.exits import EXIT_CONFIG, EXIT_FINISHED, EXIT_SIGINT


class CellFailed(RuntimeError):
    """A trial's run failed or was killed: the trial is FAIL, the study goes on."""


class Surplus(RuntimeError):
    """Other workers already hold ``n_trials`` trials: this one stops without running."""


# --------------------------------------------------------------------------- optuna parts

def make_sampler(spec: StudySpec, seed: int | None) -> Any:
    import optuna

    kind = spec.sampler.type
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "cmaes":
        if len(spec.objectives) > 1:
            raise ConfigError("sampler cmaes supports one objective; use tpe or random for several")
        return optuna.samplers.CmaEsSampler(seed=seed)
    if kind == "grid":
        return optuna.samplers.GridSampler(grid_space(spec), seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True)


def grid_space(spec: StudySpec) -> dict[str, list[Any]]:
    import numpy as np

    space: dict[str, list[Any]] = {}
    for key, p in spec.space.items():
        if p.type == "categorical":
            space[key] = list(p.choices or [])
        elif p.type == "int":
            space[key] = list(range(int(p.low), int(p.high) + 1, int(p.step or 1)))
        elif p.step:
            space[key] = [float(v) for v in np.arange(p.low, p.high + p.step / 2, p.step)]
        else:
            raise ConfigError(f"sampler grid needs a finite grid: give space.{key} a 'step' "
                              f"or make it categorical")
    return space


def suggest(trial: Any, spec: StudySpec) -> dict[str, Any]:
    values = {}
    for key, p in spec.space.items():
        if p.type == "categorical":
            values[key] = trial.suggest_categorical(key, p.choices)
        elif p.type == "int":
            values[key] = trial.suggest_int(key, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
        else:
            values[key] = trial.suggest_float(key, p.low, p.high, step=p.step, log=p.log)
    return values


def make_storage(spec: StudySpec) -> Any:
    """An RDB storage with heartbeats, so a killed worker's trial is noticed and retried."""
    import warnings

    import optuna
    from optuna.storages import RDBStorage

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    kwargs: dict[str, Any] = {}
    try:  # Optuna >= 4.9 renamed the retry callback and its argument
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        kwargs["heartbeat_stale_trial_callback"] = RetryHeartbeatStaleTrialCallback(max_retry=spec.max_retry)
    except ImportError:
        from optuna.storages import RetryFailedTrialCallback

        kwargs["failed_trial_callback"] = RetryFailedTrialCallback(max_retry=spec.max_retry)
    if spec.storage.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    for attempt in range(4):
        try:
            return RDBStorage(storage_url(spec.storage), heartbeat_interval=spec.heartbeat_s,
                              grace_period=2 * spec.heartbeat_s, **kwargs)
        except (ValueError, ImportError) as exc:
            raise ConfigError(f"cannot open Optuna storage {safe_url(spec.storage)!r}: "
                              f"{str(exc).splitlines()[0]}") from None
        except Exception as exc:  # workers starting together race to create the tables
            if attempt == 3:
                raise ConfigError(f"cannot open Optuna storage {safe_url(spec.storage)!r}: "
                                  f"{str(exc).splitlines()[0]}") from None
            time.sleep(1.0 + attempt)


def storage_url(url: str) -> str:
    """``postgresql://`` means psycopg (3) to SQLAlchemy 2.1; use psycopg2 when only it exists."""
    if url.startswith("postgresql://"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
            return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def safe_url(url: str) -> str:
    """The storage URL without a password (it goes into tags and logs)."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}@{host}"
    return url


def _check_storage_apart(storage: str, tracking: str) -> None:
    """Optuna and MLflow both version their schema in an ``alembic_version`` table, so one
    database schema cannot hold both: each would find the other's revision and stop."""
    norm = lambda u: u.replace("+psycopg2", "").replace("+psycopg", "").rstrip("/")  # noqa: E731
    if norm(storage) == norm(tracking) and not storage.startswith("sqlite"):
        raise ConfigError(f"the Optuna storage and the MLflow store are the same database "
                          f"({safe_url(storage)}); give Optuna another database or schema, e.g. "
                          f"{safe_url(storage)}?options=-csearch_path%3Doptuna")
    if norm(storage) == norm(tracking):
        raise ConfigError(f"the Optuna storage and the MLflow store are the same SQLite file "
                          f"({storage}); use another file such as sqlite:///optuna.db")


def _check_space(spec: StudySpec, schema: Any) -> None:
    """Every searched key exists and takes values of its range: fail before any trial."""
    fixed = [override_text(k, v) for k, v in spec.overrides.items()]
    for probe in ("low", "high"):
        sample = []
        for key, p in spec.space.items():
            value = (p.choices[0] if probe == "low" else p.choices[-1]) if p.type == "categorical" \
                else (int(getattr(p, probe)) if p.type == "int" else float(getattr(p, probe)))
            sample.append(override_text(key, value))
        try:
            resolve_config(schema, spec.config, fixed + sample + [f"seed={spec.seeds[0]}"])
        except ConfigError as exc:
            raise ConfigError(f"search space does not fit task {spec.entry!r}: {exc}") from None


# --------------------------------------------------------------------------- parent run

def _study_parent(study: Any, client: Any, exp_id: str, spec: StudySpec) -> str:
    """One parent run per study, shared by all workers through a study user attribute."""
    from sweeps.parent import open_parent

    tags = {T.OPTUNA_STUDY: spec.name or "", T.OPTUNA_STORAGE: safe_url(spec.storage),
            T.SWEEP_ENTRY: spec.entry,
            **({"mlflow.note.content": spec.description} if spec.description else {})}
    known = study.user_attrs.get("mlflow_parent_run_id")
    if env.MLFLOW_RUN_ID.is_set():
        run_id, _ = open_parent(client, exp_id, kind="study", name=spec.name or "", extra_tags=tags)
        if not known:
            study.set_user_attr("mlflow_parent_run_id", run_id)
        return run_id
    if known:
        try:
            client.get_run(known)
            client.update_run(known, status="RUNNING")
            return known
        except Exception:
            pass
    run_id, _ = open_parent(client, exp_id, kind="study", name=spec.name or "", extra_tags=tags,
                            reuse=False)
    if study.user_attrs.get("mlflow_parent_run_id") in (None, known):
        study.set_user_attr("mlflow_parent_run_id", run_id)
    time.sleep(0.05)
    winner = optuna_attr(study, "mlflow_parent_run_id") or run_id
    if winner != run_id:  # another worker created the parent at the same moment
        client.delete_run(run_id)
    return winner


def optuna_attr(study: Any, key: str) -> Any:
    """A fresh read from the storage: the public ``Study.user_attrs`` asks it on every access."""
    return study.user_attrs.get(key)


# --------------------------------------------------------------------------- the objective

class Objective:
    """One trial: suggest, run each seed as a child run, reduce the metric(s) to a value."""

    def __init__(self, spec: StudySpec, task: Any, client: Any, exp_name: str, exp_id: str,
                 parent_id: str, launcher: Any, logs: Path) -> None:
        self.spec, self.task, self.client = spec, task, client
        self.exp_name, self.exp_id, self.parent_id = exp_name, exp_id, parent_id
        self.launcher, self.logs = launcher, logs
        self.fixed = [override_text(k, v) for k, v in spec.overrides.items()]
        self.metric_error: str | None = None
        self.kept_logs = False
        self.stopped = False  # set by the callbacks: no further trial could work

    def _surplus(self, trial: Any) -> bool:
        from optuna.trial import TrialState

        live = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
        ahead = [t for t in trial.study.get_trials(deepcopy=False)
                 if t.number < trial.number and t.state in live
                 and not t.user_attrs.get(T.SURPLUS)]
        return len(ahead) >= self.spec.n_trials

    def __call__(self, trial: Any) -> Any:
        if self._surplus(trial):  # lost a race for the last slot of the budget (see _optimize)
            trial.set_user_attr(T.SURPLUS, True)
            raise Surplus(f"n_trials={self.spec.n_trials} already taken by other workers")
        values = suggest(trial, self.spec)
        overrides = self.fixed + [override_text(k, v) for k, v in values.items()]
        run_ids: list[str] = []
        per_seed: list[list[float]] = []
        objectives = self.spec.objectives
        for i, seed in enumerate(self.spec.seeds):
            cfg = resolve_config(self.task.schema, self.spec.config, overrides + [f"seed={seed}"])
            from tracking.config import fingerprint, group_key

            cell = Cell(i, {**values, "seed": seed}, overrides + [f"seed={seed}"], cfg,
                        fingerprint(cfg), group_key(cfg))
            run = self._finished_run(cell.fingerprint)
            if run is None:
                run = self._launch(trial, cell, i, run_ids)
            else:
                run_ids.append(run.info.run_id)
                trial.set_user_attr("mlflow_run_ids", run_ids)
            per_seed.append([self._read(run, o) for o in objectives])
        means = [sum(v[j] for v in per_seed) / len(per_seed) for j in range(len(objectives))]
        for j, o in enumerate(objectives):
            trial.set_user_attr(f"{o.metric}.per_seed", [v[j] for v in per_seed])
        return means[0] if len(means) == 1 else tuple(means)

    def _finished_run(self, fp: str) -> Any | None:
        found = self.client.search_runs(
            [self.exp_id], filter_string=f"tags.`{T.FINGERPRINT}` = '{fp}' and "
                                         f"attributes.status = 'FINISHED'", max_results=1)
        return found[0] if found else None

    def _note(self, trial: Any) -> dict[str, str]:
        """The spec's description on each trial's runs, as the UI's description."""
        if not self.spec.description:
            return {}
        return {"mlflow.note.content": f"{self.spec.description.strip()}\n\nTrial {trial.number} of "
                                       f"study `{self.spec.name}`: {trial.params}"}

    def _launch(self, trial: Any, cell: Cell, seed_index: int, run_ids: list[str]) -> Any:
        import optuna

        from sweeps.pruning import pruning_env
        from sweeps.sweep import cell_job, find_run

        env = {}
        if seed_index == 0 and len(self.spec.objectives) == 1 and self.spec.pruner.type != "none":
            from tracking.backends import trial_id

            env = pruning_env(self.spec.storage, self.spec.name or "",
                              trial_id(trial, storage=storage_url(self.spec.storage), study_name=self.spec.name),
                              self.spec.objectives[0].metric, self.spec.pruner)
        job = cell_job(cell, entry=self.spec.entry, module=self.task.module, config=self.spec.config,
                       experiment=self.exp_name, experiment_id=self.exp_id, parent_run_id=self.parent_id,
                       sweep_name=self.spec.name or "", logs=self.logs, env=env,
                       tags={T.OPTUNA_STUDY: self.spec.name or "", T.OPTUNA_TRIAL: str(trial.number),
                             T.OPTUNA_SEED_INDEX: str(seed_index), **self._note(trial)})
        job.run_name = f"trial{trial.number}-s{cell.seed}"
        won, _ = self.claims.claim([job])
        if not won:  # another worker runs this very cell (a retried trial's seed): use its run
            return self._await_elsewhere(trial, cell, run_ids)
        code = self.launcher.wait_one(job)
        self.claims.release(job.run_id, "KILLED" if outcome_of(code) == "killed" else "FAILED",
                            f"CellProcess: the cell's process exited {code} before ending its run")
        run = find_run(self.client, self.exp_id, job)
        kind = outcome_of(code)
        if run is not None:
            from tracking.store import run_url

            run_ids.append(run.info.run_id)
            trial.set_user_attr("mlflow_run_ids", run_ids)
            trial.set_user_attr("mlflow_run_urls", [run_url(self.exp_id, r) for r in run_ids])
        if kind == "pruned":
            raise optuna.TrialPruned(f"run {run.info.run_id if run else '?'} pruned")
        if kind != "finished" or run is None:
            self.kept_logs = True
            raise CellFailed(f"trial {trial.number} seed {cell.seed}: run "
                             f"{run.info.run_id if run else '(none)'} {kind} (exit {code}); "
                             f"log {job.log_path}\n{job.tail()}")
        return run

    @property
    def claims(self) -> Any:
        """Seeds' cells are claimed like a sweep's (sweeps/claims.py), so none runs twice."""
        if getattr(self, "_claims", None) is None:
            from sweeps.claims import Claims
            from sweeps.ledger import Ledger

            self._claims = Claims(self.client, Ledger(self.client, self.exp_id, self.task.name),
                                  self.task.name, self.launcher)
        return self._claims

    def _await_elsewhere(self, trial: Any, cell: Cell, run_ids: list[str]) -> Any:
        ledger = self.claims.ledger
        while True:
            ledger.load([cell.fingerprint], mark_stale=True)
            state = ledger.state(cell.fingerprint)
            if state.finished:
                run_ids.append(state.finished.run_id)
                trial.set_user_attr("mlflow_run_ids", run_ids)
                return self.client.get_run(state.finished.run_id)
            if not state.live:
                raise CellFailed(f"trial {trial.number} seed {cell.seed}: another worker's run of this "
                                 f"cell ended without finishing")
            time.sleep(2.0)

    def _read(self, run: Any, objective: Any) -> float:
        if run.data.tags.get(T.DIVERGED):  # divergence is a result, but never a value
            raise CellFailed(f"run {run.info.run_id} diverged at step {run.data.tags[T.DIVERGED]} "
                             f"({T.DIVERGED}): the trial has no value")
        metrics = run.data.metrics
        if objective.metric not in metrics:
            logged = ", ".join(sorted(k for k in metrics if not k.startswith("diag."))) or "none"
            self.metric_error = (f"objective metric {objective.metric!r} was not logged by "
                                 f"{self.spec.entry!r} (run {run.info.run_id}); logged: {logged}")
            raise CellFailed(self.metric_error)
        if objective.reduce == "last":
            return float(metrics[objective.metric])
        history = [m.value for m in self.client.get_metric_history(run.info.run_id, objective.metric)]
        return float(min(history) if objective.direction == "minimize" else max(history))


# --------------------------------------------------------------------------- the driver

def run_study(spec: StudySpec, raw: dict[str, Any]) -> int:
    """Create or join the study and work on it until it holds ``n_trials`` trials.

    Returns EXIT_FINISHED, EXIT_SIGINT (interrupted: run it again to go on) or EXIT_CONFIG
    when the objective metric is never logged (every further trial would fail the same way).
    """
    from tracking import store
    from tracking.tasks import load_task

    task = load_task(spec.entry)
    _check_space(spec, task.schema)
    launcher_class(spec.launcher).prewarm(task.module)
    if spec.pruner.type != "none" and len(spec.objectives) > 1:
        raise ConfigError("pruning needs a single objective; set pruner.type: none for several")
    _check_storage_apart(spec.storage, store.tracking_uri())
    study = open_study(spec)

    env.quiet()
    client = store.client()
    exp_name = spec.experiment or spec.entry
    exp_id = store.experiment_id(exp_name, description=spec.description or None)
    parent_id = _study_parent(study, client, exp_id, spec)
    client.log_text(parent_id, dump(raw), "study.yaml")
    done_before = len(study.get_trials(deepcopy=False, states=_counted()))
    print(f"study {spec.name!r} on {safe_url(spec.storage)}: {done_before}/{spec.n_trials} trials done; "
          f"parent run {parent_id} in experiment {exp_name!r}\n"
          f"  watch it: optuna-dashboard {safe_url(spec.storage)}", flush=True)
    launcher = make_launcher(spec.launcher, 1, module=task.module, options=spec.launcher_options())
    logs = Path(tempfile.mkdtemp(prefix=f"labrun-study-{spec.name}-"))
    objective = Objective(spec, task, client, exp_name, exp_id, parent_id, launcher, logs)
    try:
        interrupted = done_before < spec.n_trials and _optimize(study, objective)
    finally:
        launcher.close()
    if objective.kept_logs:
        print(f"logs of the failed trials' processes: {logs}", file=sys.stderr)
    else:  # each run keeps its own logs/train.log; these copies are not needed
        import shutil

        shutil.rmtree(logs, ignore_errors=True)
    _close(study, client, parent_id, spec, interrupted)
    if objective.metric_error:
        print(f"labrun optimize: error: {objective.metric_error}", file=sys.stderr)
        return EXIT_CONFIG
    return EXIT_SIGINT if interrupted else EXIT_FINISHED


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
    existing = [d.name.lower() for d in study.directions]
    if existing != directions:
        raise ConfigError(f"study {spec.name!r} already exists with directions {existing}, the spec "
                          f"asks for {directions}; use another study name")
    # Each worker (and each resumption) seeds its sampler differently, or they would all
    # propose the same parameters.
    seed = None if spec.sampler.seed is None else spec.sampler.seed + len(study.trials)
    study.sampler = make_sampler(spec, seed)
    return study


def _optimize(study: Any, objective: Objective) -> bool:
    """Run trials until the study holds ``n_trials``; True when interrupted (Ctrl-C, SIGTERM).

    One trial at a time, asking for one only while the budget is not taken: a worker that
    finds the rest of the budget held by other workers' RUNNING trials waits for them, and
    when one's heartbeat goes stale (its worker was killed) fails it so that Optuna's retry
    callback queues it again, for this worker or another; its MLflow runs end KILLED. No
    trial is recorded for a budget a worker did not use.
    """
    spec = objective.spec
    callbacks = [_reporter(objective), _fail_guard(spec, objective)]
    said = ""
    try:
        while not objective.stopped:
            counted, running = _budget(study)
            if counted >= spec.n_trials:
                return False
            if counted + len(running) >= spec.n_trials:
                line = (f"waiting for {len(running)} trial(s) of other workers (RUNNING: "
                        f"{', '.join(str(t.number) for t in running)}); a killed worker's trial is retried "
                        f"after {2 * spec.heartbeat_s} s without a heartbeat")
                if line != said:
                    print(line, flush=True)
                    said = line
                _reap_stale(study, objective, running)
                time.sleep(min(5.0, spec.heartbeat_s / 2))
                continue
            said = ""
            study.optimize(objective, n_trials=1, catch=(CellFailed, Surplus), callbacks=callbacks,
                           gc_after_trial=False)
    except KeyboardInterrupt:
        objective.launcher.stop()  # the running cell ends KILLED, its checkpoints kept
        objective.launcher.poll()
        return True
    return False


def _budget(study: Any) -> tuple[int, list[Any]]:
    """Trials that count (COMPLETE, PRUNED) and the RUNNING ones (other workers' here)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                      TrialState.RUNNING))
    counted = sum(t.state != TrialState.RUNNING for t in trials)
    return counted, [t for t in trials if t.state == TrialState.RUNNING]


def _reap_stale(study: Any, objective: Objective, running: list[Any]) -> None:
    """Fail the trials whose worker stopped beating (Optuna queues their retry) and end their
    MLflow runs KILLED, unless a run's own process is still alive."""
    import optuna
    from optuna.trial import TrialState

    optuna.storages.fail_stale_trials(study)
    now = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    for trial in running:
        if trial.number not in now:
            _end_stale_runs(objective, trial.number)


def _end_stale_runs(objective: Objective, number: int) -> None:
    from tracking.store import is_stale, mark_stale_killed

    client, spec = objective.client, objective.spec
    found = client.search_runs([objective.exp_id], filter_string=(
        f"tags.`{T.OPTUNA_STUDY}` = '{spec.name or ''}' and tags.`{T.OPTUNA_TRIAL}` = '{number}' "
        f"and attributes.status = 'RUNNING'"))
    for run in found:  # the search already holds each run: judge it without fetching it again
        if is_stale(run.info.status, run.data.tags, run.info.start_time, grace_s=2 * spec.heartbeat_s):
            mark_stale_killed(client, run.info.run_id)
            print(f"trial {number}: its worker is gone; run {run.info.run_id} ended KILLED", flush=True)


def _reporter(objective: Objective) -> Any:
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
        if trial.state == TrialState.FAIL and objective.metric_error:
            line += f"\n  {objective.metric_error}"
        print(line, flush=True)
        if objective.metric_error:
            objective.stopped = True
    return report


def _fail_guard(spec: StudySpec, objective: Objective) -> Any:
    """Stop a worker whose trials keep failing instead of burning the budget forever."""
    from optuna.trial import TrialState

    def guard(study: Any, trial: Any) -> None:
        failed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                  if not t.user_attrs.get(T.SURPLUS)]
        if len(failed) >= max(3, spec.n_trials):
            print(f"stopping: {len(failed)} trials failed (see their runs' labrun.failure tags)",
                  file=sys.stderr, flush=True)
            objective.stopped = True
    return guard


def _close(study: Any, client: Any, parent_id: str, spec: StudySpec, interrupted: bool) -> None:
    from optuna.trial import TrialState

    from sweeps.parent import close_parent

    trials = study.get_trials(deepcopy=False)
    count = lambda s: sum(t.state == s and not t.user_attrs.get(T.SURPLUS) for t in trials)  # noqa: E731
    metrics = {"study.trials.complete": count(TrialState.COMPLETE),
               "study.trials.pruned": count(TrialState.PRUNED),
               "study.trials.failed": count(TrialState.FAIL)}
    best: dict[str, Any] = {}
    if len(spec.objectives) == 1 and metrics["study.trials.complete"]:
        bt = study.best_trial
        metrics["study.best_value"] = float(bt.value)
        best = {"number": bt.number, "value": bt.value, "params": bt.params,
                "mlflow_run_ids": bt.user_attrs.get("mlflow_run_ids", [])}
        client.log_text(parent_id, json.dumps(best, indent=2, default=str), "best_trial.json")
        print(f"best trial {bt.number}: {spec.objectives[0].metric}={bt.value:.6g} params={bt.params}",
              flush=True)
        _figure(study, client, parent_id)
    running = count(TrialState.RUNNING)
    status = "KILLED" if interrupted else ("RUNNING" if running else "FINISHED")
    if status == "RUNNING":  # other workers still at it: they close it
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        client.log_batch(parent_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    else:
        close_parent(client, parent_id, status, metrics)


def _figure(study: Any, client: Any, parent_id: str) -> None:
    """Optimization history as a PNG on the parent run (people look, rather than read)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import optuna.visualization.matplotlib as ovm

        ax = ovm.plot_optimization_history(study)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "optimization_history.png"
            ax.figure.savefig(path, dpi=100, bbox_inches="tight")
            plt.close(ax.figure)
            client.log_artifact(parent_id, str(path), "figures")
    except Exception as exc:  # a figure is never worth failing the study for
        print(f"(no optimization history figure: {exc})", file=sys.stderr)
