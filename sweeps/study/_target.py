"""What a study's trials run: a labrun task (config keys) or any MLflow project's entry point
(``-P`` parameters, run through ``mlflow run``). The rest of the study does not tell them apart:
each gives a name (the ``labrun.task`` of its runs), a module to prewarm, its launcher, a check
of the search space before anything starts, and a trial seed's cell with its fingerprint.
"""
from __future__ import annotations

from typing import Any

from sweeps.matrix import Cell, override_text
from sweeps.spec import StudySpec
from tracking.config import ConfigError


class TaskTarget:
    """A labrun task of this checkout: the space's keys are dotted config keys."""

    def __init__(self, spec: StudySpec) -> None:
        from tracking.tasks import load_task

        self.spec, self.task = spec, load_task(spec.entry)
        self.name, self.module, self.schema = self.task.name, self.task.module, self.task.schema
        self.launcher = spec.launcher
        self.fixed = [override_text(k, v) for k, v in spec.overrides.items()]

    def check(self) -> None:
        from sweeps.study._space import check_space

        check_space(self.spec, self.schema)

    def cell(self, index: int, values: dict[str, Any], seed: int) -> Cell:
        from tracking.config import fingerprint, group_key, resolve_config

        overrides = self.fixed + [override_text(k, v) for k, v in values.items()] + [f"seed={seed}"]
        cfg = resolve_config(self.schema, self.spec.config, overrides)
        return Cell(index, {**values, "seed": seed}, overrides, cfg, fingerprint(cfg), group_key(cfg))

    def note(self) -> str:
        return ""


class ProjectTarget:
    """Any MLflow project's entry point: the space's keys are its declared ``-P`` parameters,
    checked with their types; trials run through ``mlflow run``; nothing reports to Optuna
    while a run goes, so pruning is off (:class:`sweeps.spec.StudySpec` says so)."""

    def __init__(self, spec: StudySpec) -> None:
        from sweeps.matrix import foreign_task
        from tracking.tasks import project_entry

        self.spec = spec
        self.ep = project_entry(spec.project or ".", spec.entry, spec.version)
        self.name, self.module, self.schema = foreign_task(self.ep), "", None
        if spec.launcher not in ("local", "mlflow"):
            raise ConfigError(f"entry point {spec.entry!r} of {self.ep.uri} is not a labrun task: its trials "
                              f"run through `mlflow run` (launcher mlflow), not launcher {spec.launcher!r}")
        self.launcher = "mlflow"
        self.seeded = spec.seed_param in self.ep.parameters
        if not self.seeded and "seeds" in spec.model_fields_set:
            raise ConfigError(f"seeds need a parameter {spec.seed_param!r} in entry point {spec.entry!r} of "
                              f"{self.ep.uri} (declared: {', '.join(self.ep.parameters) or 'none'}); set "
                              f"seed_param to the one that takes the seed, or leave seeds out")

    def check(self) -> None:
        """Both ends of every range (first and last choice) checked as ``mlflow run`` would."""
        for probe in ("low", "high"):
            values = {}
            for key, p in self.spec.space.items():
                if p.type == "categorical":
                    values[key] = (p.choices or [None])[0 if probe == "low" else -1]
                else:
                    values[key] = int(getattr(p, probe)) if p.type == "int" else float(getattr(p, probe))
            try:
                self.cell(0, values, self.spec.seeds[0])
            except ConfigError as exc:
                raise ConfigError(f"search space does not fit entry point {self.spec.entry!r}: {exc}") from None

    def cell(self, index: int, values: dict[str, Any], seed: int) -> Cell:
        from sweeps.matrix import foreign_cell

        cell = foreign_cell(self.ep, index, {**values, "seed": seed}, {**self.spec.overrides, **values},
                            seed if self.seeded else None, self.spec.seed_param)
        cell.name_prefix = self.ep.name
        return cell

    def note(self) -> str:
        return (f"  {self.ep.uri} -e {self.spec.entry} through `mlflow run`; pruning off (a plain MLflow "
                f"project reports no intermediate values to Optuna)\n")


def study_target(spec: StudySpec) -> TaskTarget | ProjectTarget:
    """The target of ``spec``, its search space checked: a bad key or range is a ConfigError
    (one line, exit 2) before the study or any run exists."""
    target = ProjectTarget(spec) if spec.foreign else TaskTarget(spec)
    target.check()
    return target
