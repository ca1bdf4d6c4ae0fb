"""Optuna pruning from inside a run: a ``RunObserver`` the trial's child process loads.

The study's worker and the run are different processes, so the observer is named in
``LABRUN_OBSERVERS=sweeps.pruning:from_environment`` and finds its trial through the
environment variables below. It reports the objective metric at every step the task logs
it and raises ``tracking.Pruned`` when the pruner says so; the run then ends KILLED with
``labrun.pruned=true`` and exits 3, which the worker turns into a PRUNED trial.
"""
from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping

from tracking.observers import Pruned, RunObserver

ENV_STORAGE = "LABRUN_OPTUNA_STORAGE"
ENV_STUDY = "LABRUN_OPTUNA_STUDY"
ENV_TRIAL_ID = "LABRUN_OPTUNA_TRIAL_ID"
ENV_METRIC = "LABRUN_OPTUNA_METRIC"
ENV_PRUNER = "LABRUN_OPTUNA_PRUNER"
OBSERVER = "sweeps.pruning:from_environment"


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
    return {"LABRUN_OBSERVERS": OBSERVER, ENV_STORAGE: storage, ENV_STUDY: study,
            ENV_TRIAL_ID: str(trial_id), ENV_METRIC: metric, ENV_PRUNER: json.dumps(data)}


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
        run.set_tag("labrun.pruner", self.pruner.get("type", "median"))

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
    missing = [k for k in (ENV_STORAGE, ENV_STUDY, ENV_TRIAL_ID, ENV_METRIC) if not os.environ.get(k)]
    if missing:
        raise RuntimeError(f"sweeps.pruning needs {', '.join(missing)} in the environment "
                           f"(set by `labrun optimize`)")
    return OptunaPruningObserver(os.environ[ENV_STORAGE], os.environ[ENV_STUDY],
                                 int(os.environ[ENV_TRIAL_ID]), os.environ[ENV_METRIC],
                                 json.loads(os.environ.get(ENV_PRUNER) or "{}"))
