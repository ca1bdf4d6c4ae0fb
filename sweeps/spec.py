"""Sweep and study specs: YAML files validated by typed schemas before anything runs.

A spec error must cost nothing: every check here (and the cell expansion that follows,
which validates each cell's overrides against the task schema) happens before a single
run exists, and each failure is one line naming the bad key and what would be valid.
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator,
                      model_validator)

from sweeps import conditions
from sweeps.launchers.base import Launcher, LauncherOptions, registered, unknown_launcher
from tracking.config import ConfigError, exists, read_yaml, set_dotted


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BaseSpec(_Strict):
    """What every spec says: the entry point and its base config, where the runs go, and how
    they are started. A launcher's options sit under its name (``submitit: {cluster: local}``),
    typed by that launcher's ``Options``: see :meth:`with_launchers`."""

    entry: str
    """MLproject entry point of the task (e.g. ired, toy), or of a sweep's foreign ``project``."""
    name: str | None = None
    """Sweep name (tag ``labrun.sweep``) or study name in the storage; default: the spec file's stem."""
    description: str = ""
    """Shown on the parent run and each run (the UI's description)."""
    config: str | None = None
    """Base config: a YAML path or a name from the task's configs/ (default: default.yaml)."""
    overrides: dict[str, Any] = Field(default_factory=dict)
    """Fixed dotted overrides applied to every run."""
    experiment: str | None = None
    """MLflow experiment of the parent run and its runs (default: the entry point name)."""
    launcher: str = "local"
    """How runs are started: a registered launcher's name (``labrun sweep --help`` lists them);
    a study's worker runs its trials' runs one at a time."""

    _origin: ClassVar[type[BaseSpec] | None] = None
    """Set on the models :meth:`with_launchers` builds: the spec they extend."""

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        """The name becomes a tag, a temp folder's prefix and an Optuna study name: a path-like
        one (``../../x``) would escape the temp dir and fail only after the parent run exists."""
        if value is None:
            return None
        bad = next((c for c in value if c in "/\\" or not c.isprintable()), None)
        if not value.strip() or value.startswith((".", "-")) or bad is not None or len(value) > 120:
            why = (f"contains {bad!r}" if bad is not None else "is empty" if not value.strip()
                   else "is longer than 120 characters" if len(value) > 120 else f"starts with {value[0]!r}")
            raise ValueError(f"{why}; a name is a plain word such as my_sweep-v2 (letters, digits, "
                             f"_ - . +, no path separators, not starting with . or -); set 'name:' in "
                             f"the spec or --set name=...")
        return value

    @field_validator("launcher")
    @classmethod
    def _known_launcher(cls, value: str) -> str:
        if value not in registered():
            raise ValueError(unknown_launcher(value))
        return value

    def launcher_options(self) -> LauncherOptions | None:
        """The chosen launcher's options block, or None if it takes none."""
        value = getattr(self, self.launcher, None)
        return value if isinstance(value, LauncherOptions) else None

    @classmethod
    def with_launchers(cls) -> type[BaseSpec]:
        """This spec plus one optional key per launcher that takes options, typed by its schema.

        Built from the registry as it is now, not at import, so a launcher registered later
        (an installed package's, or one defined in code) is accepted; a bad block still gets
        the spec's one-line error with the key path.
        """
        spec = cls._origin or cls
        return _bound(spec, tuple(c for c in registered().values() if c.Options.names()))

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Any:
        """Validate with :meth:`with_launchers`: the launchers' blocks are part of the spec."""
        if cls._origin is not None:
            return super().model_validate(obj, **kwargs)
        return cls.with_launchers().model_validate(obj, **kwargs)


@functools.cache
def _bound(spec: type[BaseSpec], launchers: tuple[type[Launcher], ...]) -> type[BaseSpec]:
    fields: dict[str, Any] = {}
    for launcher in launchers:
        if launcher.name in spec.model_fields:
            raise TypeError(f"launcher {launcher.name!r} has options but its name is already a spec key")
        fields[launcher.name] = (launcher.Options, Field(default_factory=launcher.Options,
                                                         description=launcher.help))
    model = create_model(spec.__name__, __base__=spec, __module__=spec.__module__, __doc__=spec.__doc__,
                         **fields)
    model._origin = spec
    return model


class SweepSpec(BaseSpec):
    """A run matrix: ``conditions x zip x matrix x seeds`` cells of one entry point."""

    project: str = "."
    """Any MLflow project: a folder holding an MLproject, or a git URI (``mlflow run``'s
    ``URI``). An entry point that is not a labrun task is swept through ``mlflow run``
    with ``-P`` parameters checked against its declared ones (matrix and overrides keys are
    then parameter names)."""
    version: str | None = None
    """The foreign project's git commit or branch (``mlflow run --version``)."""
    seed_param: str = "seed"
    """Foreign projects: the parameter that ``seeds`` sets."""
    matrix: dict[str, list[Any]] | None = None
    """Dotted key -> values; every combination is a cell."""
    zip: list[dict[str, list[Any]]] = Field(default_factory=list)
    """Groups of keys that vary together (equal-length lists), e.g. model pairs."""
    seeds: list[int] | None = None
    """Seeds: the outermost axis, so it varies slowest (all cells of seed 0 come first)."""
    conditions: dict[str, dict[str, Any]] | None = None
    """Named override bundles (label_noise_20, ood...); each sets ``condition`` to its name."""
    retries: int = Field(default=1, ge=0)
    """How often a FAILED cell is run again (killed and stale ones are always rerun)."""
    parallel: int = Field(default=1, ge=1)

    @field_validator("matrix")
    @classmethod
    def _matrix_values(cls, value: dict[str, list[Any]] | None) -> dict[str, list[Any]] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("matrix is empty; give at least one dotted key with a list of values, "
                             "or leave 'matrix' out")
        for key, values in value.items():
            if not values:
                raise ValueError(f"matrix key {key!r} has no values; give a non-empty list")
        return value

    @field_validator("zip")
    @classmethod
    def _zip_groups(cls, groups: list[dict[str, list[Any]]]) -> list[dict[str, list[Any]]]:
        for group in groups:
            lengths = {k: len(v) for k, v in group.items()}
            if not group or 0 in lengths.values():
                raise ValueError("a zip group is empty; give keys with non-empty lists of equal length")
            if len(set(lengths.values())) > 1:
                raise ValueError(f"zip group lists differ in length ({lengths}); they vary together, "
                                 f"so give each key the same number of values")
        return groups

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int] | None) -> list[int] | None:
        if seeds is not None and not seeds:
            raise ValueError("seeds is empty; give a list such as [0, 1, 2] or leave it out")
        return seeds

    @field_validator("conditions")
    @classmethod
    def _conditions(cls, conds: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]] | None:
        if conds is not None and not conds:
            raise ValueError("conditions is empty; name at least one bundle or leave it out")
        return conds


class ParamSpec(_Strict):
    """One search-space dimension over a dotted config key."""

    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _complete(self) -> "ParamSpec":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
        else:
            if self.low is None or self.high is None:
                raise ValueError(f"an {self.type} parameter needs 'low' and 'high'")
            if self.low > self.high:
                raise ValueError(f"low ({self.low}) is above high ({self.high})")
            if self.log and self.low <= 0:
                raise ValueError(f"log scale needs low > 0, got {self.low}")
        return self


class ObjectiveSpec(_Strict):
    """What a trial's value is: a metric its runs log, reduced per run, then averaged over seeds."""

    metric: str
    """A labrun task's hierarchical name (``metric.mse.val``), or any metric a foreign
    project logs (``rmse``): checked by :class:`StudySpec`, which knows which it is."""
    direction: Literal["minimize", "maximize"] = "minimize"
    reduce: Literal["last", "best"] = "last"
    """'last': the final logged value; 'best': the best one over the run's history."""

    @field_validator("metric")
    @classmethod
    def _metric_given(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("the objective needs a metric name, e.g. metric.mse.val (or rmse for a "
                             "foreign project)")
        return name


class SamplerSpec(_Strict):
    type: Literal["tpe", "random", "grid", "cmaes"] = "tpe"
    seed: int | None = None


class PrunerSpec(_Strict):
    type: Literal["none", "median", "hyperband"] = "median"
    n_startup_trials: int = 3
    n_warmup_steps: int = 0
    min_resource: int = 1
    max_resource: int | str = "auto"
    reduction_factor: int = 3


class StudySpec(BaseSpec):
    """An Optuna study over one entry point: each trial is one child run per seed. The entry
    point is a labrun task (``space`` holds dotted config keys) or, with ``project``, any
    MLflow project's (``space`` holds its ``-P`` parameters; trials run through ``mlflow run``)."""

    project: str | None = None
    """A foreign MLflow project: a folder with an MLproject, or a git URI (as in sweep specs)."""
    version: str | None = None
    """The foreign project's git commit or branch (``mlflow run --version``)."""
    seed_param: str = "seed"
    """Foreign projects: the parameter that ``seeds`` sets (none is passed when the project
    declares no such parameter and ``seeds`` is left at its default)."""
    space: dict[str, ParamSpec]
    objective: ObjectiveSpec | list[ObjectiveSpec]
    seeds: list[int] = Field(default_factory=lambda: [0])
    """A trial's value is the mean over these seeds."""
    n_trials: int = Field(default=20, ge=1)
    sampler: SamplerSpec = SamplerSpec()
    pruner: PrunerSpec = PrunerSpec()
    storage: str = "sqlite:///optuna.db"
    """Optuna storage: an SQLite file by default, any SQLAlchemy URL for several workers."""
    heartbeat_s: int = Field(default=30, ge=1)
    """A worker's trial is judged dead after 2x this without a beat, then retried."""
    max_retry: int = Field(default=2, ge=0)
    """How often a killed worker's trial is retried by another worker."""

    @field_validator("space")
    @classmethod
    def _space(cls, space: dict[str, ParamSpec]) -> dict[str, ParamSpec]:
        if not space:
            raise ValueError("space is empty; give at least one dotted key with a type and range")
        return space

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds:
            raise ValueError("seeds is empty; give a list such as [0] or leave it out")
        return seeds

    @model_validator(mode="after")
    def _fits_its_kind(self) -> "StudySpec":
        """A labrun task's metrics have hierarchical names; a foreign project's runs report
        nothing to Optuna while they run, so its trials cannot be pruned."""
        if self.project is None:
            from tracking.metrics import validate_name

            for objective in self.objectives:
                validate_name(objective.metric)
            return self
        if "pruner" in self.model_fields_set and self.pruner.type != "none":
            raise ValueError(f"pruner {self.pruner.type!r}: a foreign MLflow project reports no intermediate "
                             f"values to Optuna, so its trials cannot be pruned; set pruner: {{type: none}}")
        self.pruner = PrunerSpec(type="none")
        if self.config is not None:
            raise ValueError("'config' is a labrun task's base YAML; a foreign project takes -P "
                             "parameters: put fixed ones in 'overrides'")
        return self

    @property
    def foreign(self) -> bool:
        return self.project is not None

    @property
    def objectives(self) -> list[ObjectiveSpec]:
        return self.objective if isinstance(self.objective, list) else [self.objective]


# --------------------------------------------------------------------------- loading

def _valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, info in model.model_fields.items():
        keys.append(prefix + name)
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(_valid_keys(ann, prefix + name + "."))
        elif isinstance(ann, type) and dataclasses.is_dataclass(ann):  # a launcher's options
            keys.extend(f"{prefix}{name}.{f.name}" for f in dataclasses.fields(ann))
    return keys


def _explain(model: type[BaseModel], exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    # union members appear in the location as type names ('ObjectiveSpec', 'list[ObjectiveSpec]')
    loc = [str(p) for p in err["loc"] if not (str(p)[:1].isupper() or "[" in str(p))]
    key = ".".join(loc)
    if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):  # models, dataclasses
        keys = _valid_keys(model)
        close = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
        hint = f"did you mean: {', '.join(close)}?" if close else \
            f"valid keys: {', '.join(k for k in keys if '.' not in k)}"
        return f"{source}: unknown key {key!r}; {hint}"
    if err["type"] == "missing":
        return f"{source}: {key!r} is required"
    msg = err["msg"].removeprefix("Value error, ")
    where = f"{key}: " if key else ""
    if err["type"] in ("value_error", "assertion_error"):
        return f"{source}: {where}{msg}"
    return f"{source}: {where}{msg} (got {err.get('input')!r})"


def _read(path: str | Path) -> dict[str, Any]:
    if conditions.is_conditions_file(path):  # an experiment-conditions .json: one cell per condition
        return conditions.spec_data(path)
    p = Path(path)
    if not exists(p):
        specs = Path(__file__).resolve().parent / "specs"
        for candidate in (specs / str(path), specs / f"{path}.yaml"):
            if exists(candidate):
                p = candidate
                break
        else:
            shipped = ", ".join(sorted(f.stem for f in specs.glob("*.yaml")))
            raise ConfigError(f"spec {str(path)!r} not found; pass a YAML file or a shipped spec: {shipped}")
    data = read_yaml(p, "spec", "pass a YAML file or a shipped spec name")
    data.setdefault("name", p.stem)
    return data


def _apply_sets(data: dict[str, Any], sets: Sequence[str]) -> None:
    """``--set parallel=2`` / ``--set overrides.train.steps=5`` on the spec itself."""
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"malformed --set {item!r}: expected key=value (e.g. --set parallel=2)")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise ConfigError(f"malformed --set {item!r}: the value is not YAML ({problem})") from None
        head, _, rest = key.partition(".")
        if head in ("overrides", "matrix") and rest:
            _mapping_at(data, head, item)[rest] = value  # dotted config keys stay one key
        elif head == "space" and rest and "." in rest:
            dotted, _, attr = rest.rpartition(".")
            _mapping_at(_mapping_at(data, "space", item), dotted, item)[attr] = value
        else:
            set_dotted(data, key, value)


def _mapping_at(data: dict[str, Any], key: str, item: str) -> dict[str, Any]:
    """``data[key]`` as a mapping a ``--set`` can write into (created when absent or null)."""
    if data.get(key) is None:
        data[key] = {}
    if not isinstance(data[key], dict):
        raise ConfigError(f"cannot apply --set {item!r}: {key!r} in the spec is a "
                          f"{type(data[key]).__name__}, not a mapping")
    return data[key]


S = typing.TypeVar("S", SweepSpec, StudySpec)


def load_spec(kind: type[S], path: str | Path, sets: Sequence[str] = ()) -> tuple[S, dict[str, Any]]:
    """Spec file (+ ``--set``) -> validated spec and the raw mapping (logged as an artifact)."""
    data = _read(path)
    _apply_sets(data, sets)
    schema = kind.with_launchers()
    try:
        spec = schema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_explain(schema, exc, f"spec {Path(str(path)).name}")) from None
    return spec, data


def dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
