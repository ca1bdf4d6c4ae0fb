"""Typed task configs: a YAML base file plus dotted ``--set`` overrides.

Validation runs before labrun creates a run, so a typo in an override can never leave a
half-written run in the store: it either yields a complete, typed config or a
:class:`ConfigError` whose one-line message says what was wrong and what is valid. (Under
``mlflow run`` the run exists before the task starts; a config error then marks that run
FAILED with the reason instead, see :func:`exit_with_config_error`.)

Fields marked :func:`execution` say *how* a run executes (checkpoint cadence, threads,
pauses), not *what* it computes: they are logged as params like any other field but left
out of the fingerprint and the group, so changing them neither reruns finished sweep cells
nor splits a group of seeds in analysis.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping, Optional, Sequence, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from tracking import env
from tracking import tags as T
from tracking.exits import EXIT_CONFIG as EXIT_CONFIG_ERROR

RESEARCH_STATUSES = ("exploratory", "keep", "baseline", "failed")


class ConfigError(ValueError):
    """A config, override or option that cannot be used; the message is one line."""


_EXECUTION = "labrun_execution"


def execution(default: Any = None, **kwargs: Any) -> Any:
    """A field that does not define the experiment: same result whatever its value.

    ``sleep_s: float = execution(0.0)``; keyword arguments go to pydantic's ``Field``.
    """
    extra = dict(kwargs.pop("json_schema_extra", None) or {}, **{_EXECUTION: True})
    return Field(default, json_schema_extra=extra, **kwargs)


def is_execution(info: Any) -> bool:
    extra = info.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get(_EXECUTION))


class Section(BaseModel):
    """Base for nested config sections: unknown keys are errors, assignments are checked."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)


class CheckpointConfig(Section):
    every: int = 0
    """Save a full-state checkpoint every N global steps (0: only where the task asks)."""
    keep: int = 2
    """How many periodic checkpoints to keep in the store (the best one is kept apart)."""
    quantize_moments: bool = False
    """Store optimizer moments in 8 bits: ~3x smaller, but resume is no longer bit-identical."""
    snapshot: Literal["copy", "deferred"] = "deferred"
    """deferred: big tensors are copied on the writer thread, and the loop waits for that copy
    only where it could change them: its next ``optimizer.step()``, a tracked module's forward
    (in-place buffers) or ``load_state_dict``, a restore (:func:`tracking.checkpoint.apply`)
    or the next save; the stall is ~3% of ``torch.save``'s time instead of the copy's ~15%
    (bench/checkpoint.py). Any other in-place change torch counts before the next step makes
    that one file impossible: it is skipped, tagged ``labrun.checkpoint.torn``, and the run
    goes on with ``copy``. copy: every tensor is copied before ``save_checkpoint`` returns;
    for loops that write through ``p.data`` or NumPy views between a save and the next step
    (see :class:`tracking.checkpoint.Deferred`)."""


class DivergenceConfig(Section):
    """What a non-finite value of a watched metric means: an execution setting, because the
    training up to that step is the same either way; only how the run is recorded differs."""

    on_nonfinite: Literal["fail", "record"] = "fail"
    """fail: the run ends FAILED at that step (``labrun.failure: NonFinite: ...``), its last
    good checkpoint kept; record: tag ``labrun.diverged=<step>``, stop training and finish
    (for studies where divergence is the result)."""
    metrics: Optional[list[str]] = None
    """Metric names to watch (None: the task's ``nonfinite_metrics``, ``loss.total``)."""


class TaskConfig(Section):
    """Base of every task's config schema.

    A task subclasses it, sets ``task`` (the MLproject entry point name) and optionally
    ``method_key`` (the dotted key whose value is the run's ``labrun.method`` tag).
    """

    task: ClassVar[str] = "task"
    method_key: ClassVar[str | None] = None
    packages: ClassVar[tuple[str, ...]] = ()
    """The task's own libraries, whose versions go into environment.json."""
    nonfinite_metrics: ClassVar[tuple[str, ...]] = ("loss.total",)
    """The training losses whose non-finite value is divergence (``divergence.metrics``)."""

    seed: int = 0
    condition: str = "default"
    device: str = "auto"
    deterministic: bool = True
    checkpoint: CheckpointConfig = execution(CheckpointConfig())
    """How often to save and how many files to keep: an execution setting."""
    divergence: DivergenceConfig = execution(DivergenceConfig())
    """A NaN/inf training loss: fail the run (default) or record it and finish."""

    _launch: "LaunchOptions" = PrivateAttr(default=None)

    @property
    def launch(self) -> "LaunchOptions":
        """How this config was asked for: base file, overrides, tags, status, resume."""
        if self._launch is None:
            self._launch = LaunchOptions()
        return self._launch

    @property
    def method_tag(self) -> str:
        """Value of the ``labrun.method`` tag: the ``method_key`` entry, else 'default'."""
        if not self.method_key:
            return "default"
        return str(get_dotted(self.model_dump(mode="json"), self.method_key))

    @classmethod
    def config_dir(cls) -> Path:
        """The task's ``configs/`` folder, beside the module that defines the schema."""
        module = sys.modules[cls.__module__]
        return Path(module.__file__).resolve().parent / "configs"


@dataclass
class LaunchOptions:
    """Run-level options from the command line that are not part of the resolved config."""

    base_config: str | None = None
    overrides: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    status: str = "exploratory"
    name: str | None = None
    description: str = ""
    resume: str | None = None
    experiment: str | None = None
    system_metrics: str = "auto"
    """on | off | auto: MLflow's system metrics (tracking.sysmetrics); auto after 2 minutes."""
    register_model: str | None = None
    """Register the model the task logs (``run.log_model``) under this name."""
    log_model: str = "auto"
    """on | off | auto: log the task's model; auto skips runs under a minute (tests, smoke runs)."""


C = TypeVar("C", bound=TaskConfig)


# --------------------------------------------------------------------------- dotted keys

def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> ``{"a.b.c": value}``; lists stay values (they are one param)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def get_dotted(tree: Mapping[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        node = node[part]
    return node


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def _field_annotation(schema: type[BaseModel], key: str) -> Any:
    """The annotation of a dotted key, or raise KeyError at the first unknown segment."""
    model: Any = schema
    annotation: Any = None
    for part in key.split("."):
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise KeyError(part)
        if part not in model.model_fields:
            raise KeyError(part)
        annotation = model.model_fields[part].annotation
        model = _unwrap_model(annotation)
    return annotation


def _unwrap_model(annotation: Any) -> Any:
    """``Optional[Section]`` -> ``Section`` so dotted keys can walk into it."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return annotation


def valid_keys(schema: type[BaseModel], prefix: str = "") -> list[str]:
    """Every settable dotted key of a schema (leaves and sections)."""
    keys: list[str] = []
    for name, info in schema.model_fields.items():
        dotted = f"{prefix}{name}"
        keys.append(dotted)
        sub = _unwrap_model(info.annotation)
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            keys.extend(valid_keys(sub, dotted + "."))
    return keys


def _describe_key(schema: type[BaseModel], key: str) -> str:
    """``  train.lr (float, default 0.001): what the field's docstring says``"""
    model: Any = schema
    info = None
    for part in key.split("."):
        info = model.model_fields[part]
        model = _unwrap_model(info.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return f"  {key}:"
    default = info.get_default(call_default_factory=True)
    doc = f" — {info.description}" if info.description else ""
    return f"  {key} ({_type_name(info.annotation)}, default {default!r}){doc}"


def _closest(key: str, keys: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.5)
    if not close:
        # Same last segment elsewhere in the tree is the commonest mistake.
        leaf = key.rsplit(".", 1)[-1]
        close = [k for k in keys if k.rsplit(".", 1)[-1] == leaf][:3]
    if not close:
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        close = [k for k in keys if parent and k.startswith(parent + ".")][:6]
    if close:
        return "did you mean: " + ", ".join(close) + "?"
    top = sorted({k.split(".")[0] for k in keys})
    return "valid top-level keys: " + ", ".join(top)


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of " + " | ".join(repr(a) for a in typing.get_args(annotation))
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


# --------------------------------------------------------------------------- parsing

def parse_value(schema: type[BaseModel], key: str, text: str) -> Any:
    """Text of an override -> Python value; str fields keep the text as typed."""
    annotation = _field_annotation(schema, key)
    if annotation is str or (
        typing.get_origin(annotation) is typing.Literal
        and all(isinstance(a, str) for a in typing.get_args(annotation))
    ):
        return text
    try:
        return yaml.safe_load(text) if text != "" else ""
    except yaml.YAMLError:
        return text


def parse_override(schema: type[BaseModel], item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(
            f"malformed override {item!r}: expected key.path=value "
            f"(e.g. --set train.lr=0.001)"
        )
    key, text = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(
            f"malformed override {item!r}: the key must be a dotted path like train.lr "
            f"(e.g. --set train.lr=0.001)"
        )
    try:
        value = parse_value(schema, key, text)
    except KeyError:
        raise ConfigError(
            f"unknown config key {key!r} (from {item!r}); {_closest(key, valid_keys(schema))}"
        ) from None
    return key, value


def exists(path: Path) -> bool:
    """``path.exists()``, but False for a name the OS refuses (too long) instead of an OSError."""
    try:
        return path.exists()
    except OSError:
        return False


def read_yaml(path: Path, what: str = "config",
              hint: str = "pass an existing YAML file with --config") -> dict[str, Any]:
    """A YAML mapping, or a one-line ConfigError naming the file, the line and the problem."""
    if not exists(path):
        raise ConfigError(f"{what} file {str(path)!r} not found; {hint}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"cannot parse YAML {what} {str(path)!r}{where}: {problem}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {str(path)!r}: {exc.strerror}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{what} {str(path)!r} must be a YAML mapping of keys to values, got {type(data).__name__}"
        )
    return data


def find_config(schema: type[TaskConfig], name: str | None) -> Path | None:
    """``None`` -> the task's default.yaml (when present); ``quick`` -> configs/quick.yaml."""
    if name is None:
        default = schema.config_dir() / "default.yaml"
        return default if default.exists() else None
    path = Path(name)
    if exists(path):
        return path
    for candidate in (schema.config_dir() / name, schema.config_dir() / f"{name}.yaml"):
        if exists(candidate):
            return candidate
    return path  # read_yaml reports it as missing


def _explain(schema: type[BaseModel], exc: ValidationError, origin: Mapping[str, str]) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    given = origin.get(key)
    if err["type"] == "extra_forbidden":
        src = f" (from {given})" if given else ""
        return f"unknown config key {key!r}{src}; {_closest(key, valid_keys(schema))}"
    try:
        expected = _type_name(_field_annotation(schema, key))
    except KeyError:
        expected = "a valid value"
    got = err.get("input")
    src = f" from {given}" if given else ""
    return f"{key} expects {expected}, got {got!r}{src} ({err['msg']})"


def resolve_config(
    schema: type[C],
    config: str | Path | None = None,
    overrides: Sequence[str] = (),
    base: Mapping[str, Any] | None = None,
) -> C:
    """Base YAML (or ``base`` mapping) + ``key=value`` overrides -> a validated config.

    Raises :class:`ConfigError`; writes nothing. Sweeps call this to fingerprint cells.
    """
    path = None
    if base is not None:
        tree: dict[str, Any] = json.loads(json.dumps(dict(base)))
    else:
        path = find_config(schema, None if config is None else str(config))
        tree = read_yaml(path) if path is not None else {}
    origin: dict[str, str] = {k: f"{path}" for k in flatten(tree)} if path else {}
    for item in overrides:
        key, value = parse_override(schema, item)
        set_dotted(tree, key, value)
        origin[key] = repr(item)
    try:
        return schema.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_explain(schema, exc, origin)) from None


# --------------------------------------------------------------------------- argv

_OPTIONS_WITH_VALUE = {"--config", "--set", "--tag", "--status", "--name", "--description",
                       "--resume", "--experiment", "--system-metrics", "--register-model",
                       "--log-model"}

USAGE = """usage: {prog} [--config PATH] [--set key.path=value ...] [--key.path value ...]
       [--seed N] [--tag key=value ...] [--status exploratory|keep|baseline|failed]
       [--name NAME] [--description TEXT] [--experiment NAME] [--resume RUN_ID]
       [--system-metrics on|off|auto] [--log-model on|off|auto] [--register-model NAME]

Runs the {task!r} task as one tracked MLflow run.

  --config PATH        base YAML (default: the task's configs/default.yaml; a bare name such
                       as 'quick' means configs/quick.yaml)
  --set key=value      dotted override, checked against the schema (repeatable);
                       '--key.path value' is the same (it is how `mlflow run -P` passes them)
  --seed N             shorthand for --set seed=N
  --tag key=value      extra run tag (repeatable)
  --status S           research status: exploratory (default), keep, baseline, failed
  --name, --description  run name and free-text description for the UI and REPORT.md
  --experiment NAME    MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME, else the task name)
  --resume RUN_ID      new run that restores RUN_ID's newest valid checkpoint and continues;
                       the base config is RUN_ID's resolved config unless --config is given
  --system-metrics M   CPU/memory/GPU curves (system/*) in the run: on, off, or auto (default:
                       after the run's first 2 minutes, so short runs pay nothing)
  --log-model M        log the trained model as an MLflow model: on, off, or auto (default:
                       runs that lasted a minute or more, or that --register-model)
  --register-model NAME  register the model the task logs in MLflow's model registry

Valid config keys:
{keys}
"""


def parse_argv(argv: Sequence[str]) -> tuple[LaunchOptions, list[str], bool]:
    """Split argv into launch options and overrides; returns (options, overrides, help)."""
    opts = LaunchOptions()
    overrides: list[str] = []
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("-h", "--help"):
            return opts, overrides, True
        if not arg.startswith("--"):
            raise ConfigError(
                f"unexpected argument {arg!r}: overrides look like --set key.path=value "
                f"or --key.path value"
            )
        name, eq, inline = arg.partition("=")
        if eq:
            value = inline
            i += 1
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"option {name} needs a value (e.g. {name} VALUE)")
            value = args[i + 1]
            i += 2
        if name == "--config":
            opts.base_config = value or None
        elif name == "--set":
            overrides.append(value)
        elif name == "--seed":
            overrides.append(f"seed={value}")
        elif name == "--tag":
            if "=" not in value:
                raise ConfigError(f"malformed tag {value!r}: expected --tag key=value")
            k, v = value.split("=", 1)
            opts.tags[k.strip()] = v
        elif name == "--status":
            if value not in RESEARCH_STATUSES:
                raise ConfigError(
                    f"unknown status {value!r}; valid: {', '.join(RESEARCH_STATUSES)}"
                )
            opts.status = value
        elif name == "--name":
            opts.name = value
        elif name == "--description":
            opts.description = value
        elif name == "--resume":
            opts.resume = value or None
        elif name == "--experiment":
            opts.experiment = value or None
        elif name == "--system-metrics":
            if value not in ("on", "off", "auto"):
                raise ConfigError(f"unknown --system-metrics {value!r}; valid: on, off, auto")
            opts.system_metrics = value
        elif name == "--register-model":
            opts.register_model = value or None
        elif name == "--log-model":
            if value not in ("on", "off", "auto"):
                raise ConfigError(f"unknown --log-model {value!r}; valid: on, off, auto")
            opts.log_model = value
        else:
            overrides.append(f"{name[2:]}={value}")
    opts.overrides = overrides
    return opts, overrides, False


def load_config(schema: type[C], argv: Sequence[str] | None = None, *, prog: str | None = None) -> C:
    """The task entry point's first line: argv -> validated config, or exit 2 with one line.

    With ``--resume RUN_ID`` and no ``--config``, the base is that run's resolved config,
    so the continued run has the same fingerprint as the one it continues.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = prog or f"labrun run {schema.task}"
    try:
        opts, overrides, want_help = parse_argv(argv)
        if want_help:
            keys = "\n".join(_describe_key(schema, k) for k in valid_keys(schema))
            print(USAGE.format(prog=prog, task=schema.task, keys=keys))
            raise SystemExit(0)
        base = None
        if opts.resume and opts.base_config is None:
            from tracking.store import resolved_config_of

            base = resolved_config_of(opts.resume)
        cfg = resolve_config(schema, opts.base_config, overrides, base=base)
        if base is None:
            found = find_config(schema, opts.base_config)
            opts.base_config = str(found) if found else None
        else:
            opts.base_config = f"run:{opts.resume}"
        from tracking.seeding import check_device
        from tracking.store import check_reachable, tracking_uri

        check_device(cfg.device)
        check_reachable(tracking_uri())  # before any run exists: one line, not a long retry loop
    except ConfigError as exc:
        exit_with_config_error(str(exc), prog)
    cfg._launch = opts
    return cfg


def exit_with_config_error(message: str, prog: str) -> "typing.NoReturn":
    """One line on stderr, exit 2: for any user error a task finds before its run starts
    (config, overrides, data settings). Under ``mlflow run`` the pre-created run is failed
    with the reason, so it neither stays RUNNING nor fails silently."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    _fail_adopted_run(message)
    raise SystemExit(EXIT_CONFIG_ERROR)


def _fail_adopted_run(message: str) -> None:
    """Under ``mlflow run`` the run exists before our code does: record why it failed.

    Without this it would end FAILED with no reason (or stay RUNNING if the launcher died).
    """
    run_id = env.MLFLOW_RUN_ID.get()
    if not run_id:
        return
    try:
        from tracking.store import client

        c = client()
        c.set_tag(run_id, T.FAILURE, f"ConfigError: {message}"[:5000])
        c.set_tag(run_id, T.STATUS, "failed")
        c.set_terminated(run_id, "FAILED")
    except Exception:
        pass


# --------------------------------------------------------------------------- identity

def digest(payload: Mapping[str, Any]) -> str:
    """The 16-hex identity of a JSON-able mapping (fingerprints, groups, foreign cells)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def experiment_fields(cfg: BaseModel) -> dict[str, Any]:
    """The resolved config without its :func:`execution` fields, at any depth."""
    out: dict[str, Any] = {}
    for name, info in type(cfg).model_fields.items():
        if is_execution(info):
            continue
        value = getattr(cfg, name)
        out[name] = experiment_fields(value) if isinstance(value, BaseModel) else \
            cfg.model_dump(mode="json", include={name})[name]
    return out


def fingerprint(cfg: TaskConfig) -> str:
    """Identical work: task + the experiment's fields including the seed."""
    return digest({"task": cfg.task, "config": experiment_fields(cfg)})


def group_key(cfg: TaskConfig) -> str:
    """The seeds of one cell share this: the fingerprint without the seed."""
    tree = experiment_fields(cfg)
    tree.pop("seed", None)
    return digest({"task": cfg.task, "config": tree})
