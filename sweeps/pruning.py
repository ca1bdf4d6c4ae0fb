"""Optuna pruning from inside a run: a ``RunObserver`` the trial's child process loads.

The study's worker and the run are different processes, so the observer is named in
``LABRUN_OBSERVERS=sweeps.pruning:from_environment`` and finds its trial through the
``LABRUN_OPTUNA_*`` variables of :mod:`tracking.env`. It reports the objective metric at
every step the task logs it and raises ``tracking.Pruned`` when the pruner says so; the
run then ends KILLED with ``labrun.pruned=true`` and exits 3, which the worker turns into a
PRUNED trial.
"""
from __future__ import annotations

import json
import math
from typing import Any, Mapping

from tracking import env
from tracking import tags as T
from tracking.observers import Pruned, RunObserver

OBSERVER = "sweeps.pruning:from_environment"
# What the observer needs to find its trial (the pruner's settings are optional).
REQUIRED = (env.LABRUN_OPTUNA_STORAGE, env.LABRUN_OPTUNA_STUDY, env.LABRUN_OPTUNA_TRIAL_ID,
            env.LABRUN_OPTUNA_METRIC)


def make_pruner(spec: Any) -> Any:
    """PrunerSpec (or its dict) -> an Optuna pruner; the worker and the run build the same one."""
    import optuna

    data = spec if isinstance(spec, dict) else spec.model_dump()
    kind = data.get("type", "median")
    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=data.get("n_startup_trials", 3),
                                           n_warmup_steps=data.get("n_warmup_steps", 0))
    if kind == "hyperband":
        max_resource = data.get("max_resource", "auto")
        return optuna.pruners.HyperbandPruner(min_resource=data.get("min_resource", 1),
                                              max_resource=max_resource,
                                              reduction_factor=data.get("reduction_factor", 3))
    return optuna.pruners.NopPruner()


def pruning_env(storage: str, study: str, trial_id: int, metric: str, pruner: Any) -> dict[str, str]:
    """What a trial's child process needs to report to its trial."""
    data = pruner if isinstance(pruner, dict) else pruner.model_dump()
    out: dict[str, str] = {}
    for var, value in ((env.LABRUN_OBSERVERS, OBSERVER), (env.LABRUN_OPTUNA_STORAGE, storage),
                       (env.LABRUN_OPTUNA_STUDY, study), (env.LABRUN_OPTUNA_TRIAL_ID, trial_id),
                       (env.LABRUN_OPTUNA_METRIC, metric), (env.LABRUN_OPTUNA_PRUNER, json.dumps(data))):
        var.set(value, out)
    return out


class OptunaPruningObserver(RunObserver):
    """Feeds one metric's intermediate values to an Optuna trial; prunes when told to."""

    def __init__(self, storage: str, study_name: str, trial_id: int, metric: str,
                 pruner: dict[str, Any]) -> None:
        self.storage, self.study_name, self.trial_id = storage, study_name, trial_id
        self.metric, self.pruner = metric, pruner
        self._trial: Any = None

    def _get_trial(self) -> Any:
        if self._trial is None:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            from sweeps.study import storage_url

            study = optuna.load_study(study_name=self.study_name, storage=storage_url(self.storage),
                                      pruner=make_pruner(self.pruner))
            self._trial = optuna.trial.Trial(study, self.trial_id)
        return self._trial

    def started(self, run: Any) -> None:
        run.set_tag(T.PRUNER, self.pruner.get("type", "median"))

    def metrics(self, run: Any, metrics: Mapping[str, float], step: int) -> None:
        value = metrics.get(self.metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return
        trial = self._get_trial()
        trial.report(float(value), step)
        if trial.should_prune():
            raise Pruned(f"optuna trial {trial.number}: {self.metric}={value:.4g} at step {step} "
                         f"is worse than the pruner allows")


def from_environment() -> OptunaPruningObserver:
    """Factory named in ``LABRUN_OBSERVERS``."""
    missing = [var.name for var in REQUIRED if not var.is_set()]
    if missing:
        raise RuntimeError(f"sweeps.pruning needs {', '.join(missing)} in the environment "
                           f"(set by `labrun optimize`)")
    return OptunaPruningObserver(env.LABRUN_OPTUNA_STORAGE.get(), env.LABRUN_OPTUNA_STUDY.get(),
                                 env.LABRUN_OPTUNA_TRIAL_ID.get(), env.LABRUN_OPTUNA_METRIC.get(),
                                 json.loads(env.LABRUN_OPTUNA_PRUNER.get() or "{}"))
