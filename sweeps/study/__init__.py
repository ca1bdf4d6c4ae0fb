"""Optuna studies over any entry point: one child run per trial and seed, workers sharing a storage.

A thin front, as Optuna's own: the parts live in private modules named for what they hold:
``_storage`` (where the study lives), ``_space`` (samplers, suggestions, checking the space
against the task), ``_trial`` (:class:`TrialRunner`, one trial's runs read back into a value),
``_parent`` (the study's parent MLflow run), ``_heartbeat`` (dead workers' trials) and
``_driver`` (:func:`run_study`, the loop that works until the study holds ``n_trials``).
"""
from sweeps.study._driver import _budget, _counted, _fail_guard, _optimize, _reporter, open_study, run_study
from sweeps.study._heartbeat import end_stale_runs as _end_stale_runs
from sweeps.study._heartbeat import reap_stale as _reap_stale
from sweeps.study._parent import _figure, optuna_attr
from sweeps.study._parent import close_study_parent as _close
from sweeps.study._parent import open_study_parent as _study_parent
from sweeps.study._space import check_space as _check_space
from sweeps.study._space import grid_space, make_sampler, suggest
from sweeps.study._storage import check_storage_apart as _check_storage_apart
from sweeps.study._storage import make_storage, safe_url, storage_url
from sweeps.study._trial import CellFailed, Surplus, TrialRunner

Objective = TrialRunner  # its name before issue #30 (spec.ObjectiveSpec is the spec's objective)

__all__ = ["CellFailed", "Surplus", "TrialRunner", "grid_space", "make_sampler", "make_storage",
           "open_study", "optuna_attr", "run_study", "safe_url", "storage_url", "suggest"]
__all__ += ["Objective", "_budget", "_check_space", "_check_storage_apart", "_close", "_counted",
            "_end_stale_runs", "_fail_guard", "_figure", "_optimize", "_reap_stale", "_reporter",
            "_study_parent"]  # today's private names, kept importable
