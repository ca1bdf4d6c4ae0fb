"""The search space: samplers over it, a trial's suggestions, and checking it against the task.

Every searched key is a dotted config key of the task, so the space is checked against the
task's schema (both ends of every range) before the study exists.
"""
from __future__ import annotations

from typing import Any

from sweeps.matrix import override_text
from sweeps.spec import StudySpec
from tracking.config import ConfigError, resolve_config


def trial_seed(study_seed: int, number: int) -> int:
    """The sampler seed of trial ``number``: a hash of the study's seed and the trial number.

    Trial numbers come from the storage, so two workers never hold the same one: their
    proposals come from different random streams by construction, never in lockstep, and
    trial ``k`` of a seeded study draws the same way whichever worker runs it.
    """
    import hashlib

    text = f"labrun-sampler:{study_seed}:{number}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "big")


def make_sampler(spec: StudySpec, seed: int | None) -> Any:
    """The spec's sampler; with a seed, one seeded per trial (:func:`trial_seed`)."""
    if seed is None:
        return _sampler(spec, None)
    return _trial_seeded(spec, seed)


def _trial_seeded(spec: StudySpec, seed: int) -> Any:
    from optuna.samplers import BaseSampler

    class TrialSeededSampler(BaseSampler):
        """The spec's sampler, made afresh for each trial with :func:`trial_seed` (a sampler
        keeps its history in the storage, not in itself, so nothing is lost)."""

        def __init__(self) -> None:
            self.inner = _sampler(spec, seed)

        def before_trial(self, study: Any, trial: Any) -> None:
            self.inner = _sampler(spec, trial_seed(seed, trial.number))
            self.inner.before_trial(study, trial)

        def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
            return self.inner.infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> Any:
            return self.inner.sample_relative(study, trial, search_space)

        def sample_independent(self, study: Any, trial: Any, name: str, distribution: Any) -> Any:
            return self.inner.sample_independent(study, trial, name, distribution)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self.inner.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            self.inner.reseed_rng()

    return TrialSeededSampler()


def _sampler(spec: StudySpec, seed: int | None) -> Any:
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


def check_space(spec: StudySpec, schema: Any) -> None:
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
