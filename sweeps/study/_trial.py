"""One trial, run: a child run per seed, claimed like a sweep's cells, read back into a value.

A seed's run that already FINISHED with the same fingerprint is read back instead of being
trained again, and a seed another worker holds (a retried trial's) is waited for, never run twice.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sweeps.launchers.base import outcome_of
from sweeps.matrix import Cell, override_text
from sweeps.spec import StudySpec
from sweeps.study._space import suggest
from sweeps.study._storage import storage_url
from tracking import tags as T


class CellFailed(RuntimeError):
    """A trial's run failed or was killed: the trial is FAIL, the study goes on."""


class Surplus(RuntimeError):
    """Other workers already hold ``n_trials`` trials: this one stops without running."""


class TrialRunner:
    """Optuna's objective for one trial: suggest, run each seed as a child run (or read back a
    FINISHED one), reduce the metric(s) to the trial's value."""

    def __init__(self, spec: StudySpec, target: Any, client: Any, exp_name: str, exp_id: str,
                 parent_id: str, launcher: Any, logs: Path) -> None:
        """``target``: a :mod:`sweeps.study._target` (a labrun task, or a foreign project's entry point)."""
        self.spec, self.task, self.client = spec, target, client
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
        run_ids: list[str] = []
        per_seed: list[list[float]] = []
        objectives = self.spec.objectives
        for i, seed in enumerate(self.spec.seeds):
            cell = self.task.cell(i, values, seed)
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
        job.run_name = f"{cell.name_prefix + '-' if cell.name_prefix else ''}trial{trial.number}-s{cell.seed}"
        won, _ = self.claims.claim([job])
        if not won:  # another worker runs this very cell (a retried trial's seed): use its run
            return self._await_elsewhere(trial, cell, run_ids)
        code = self.launcher.wait_one(job)
        self.claims.release(job.run_id, "KILLED" if outcome_of(code) == "killed" else "FAILED",
                            f"CellProcess: the cell's process exited {code} before ending its run")
        run = find_run(self.client, self.exp_id, job)
        kind = outcome_of(code)
        if run is not None:
            from tracking.views import trial_links

            run_ids.append(run.info.run_id)
            trial_links(trial, self.exp_id, run_ids)
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
