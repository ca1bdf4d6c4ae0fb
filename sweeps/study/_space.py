"""The search space: samplers over it, a trial's suggestions, and checking it against the task.

Every searched key is a dotted config key of the task, so the space is checked against the
task's schema (both ends of every range) before the study exists.
"""
from __future__ import annotations

from typing import Any

from sweeps.matrix import override_text
from sweeps.spec import StudySpec
from tracking.config import ConfigError, resolve_config


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
