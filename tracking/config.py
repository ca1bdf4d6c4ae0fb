"""Typed task configs: a YAML base file plus dotted ``--set`` overrides.

Validation runs before labrun creates a run, so a typo in an override can never leave a
half-written run in the store: it either yields a complete, typed config or a
:class:`ConfigError` whose one-line message says what was wrong and what is valid. (Under
``mlflow run`` the run exists before the task starts; a config error then marks that run
FAILED with the reason instead, see :func:`exit_with_config_error`.)

The override grammar and its error messages live here; the schema base classes in
:mod:`tracking.schema`, the command line's launch options in :mod:`tracking.argv`, dotted
keys in :mod:`tracking.dotted` and fingerprints in :mod:`tracking.identity`, all of them
importable from here as before.
"""
from __future__ import annotations

import difflib
import functools
import json
import sys
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml
from pydantic import BaseModel, ValidationError

from tracking import env
from tracking import tags as T
from tracking.argv import USAGE, command_name, parse_argv
from tracking.dotted import flatten, get_dotted, set_dotted
from tracking.exits import EXIT_CONFIG as EXIT_CONFIG_ERROR
from tracking.identity import digest, experiment_fields, fingerprint, group_key
from tracking.schema import (RESEARCH_STATUSES, C, CheckpointConfig, ConfigError, DivergenceConfig,
                             LaunchOptions, Section, TaskConfig, execution, is_execution)


# --------------------------------------------------------------------------- keys of a schema

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


def _describe_key(schema: type[BaseModel], key: str, defaults: Mapping[str, Any] | None = None) -> str:
    """``  train.lr (float, default 0.001): what the field's docstring says``

    ``defaults``: the schema's resolved defaults (a task's ``default_num_threads`` included)."""
    model: Any = schema
    info = None
    for part in key.split("."):
        info = model.model_fields[part]
        model = _unwrap_model(info.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return f"  {key}:"
    default = (defaults or {}).get(key, info.get_default(call_default_factory=True))
    doc = f" — {info.description}" if info.description else ""
    return f"  {key} ({_type_name(info.annotation)}, default {default!r}){doc}"


@functools.lru_cache(maxsize=None)
def _defaults(schema: type[BaseModel]) -> dict[str, Any]:
    """The flattened config a schema gives when nothing is set ({} if it needs something)."""
    try:
        return flatten(schema.model_validate({}).model_dump(mode="json"))
    except ValidationError:
        return {}


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
    key = _canonical_key(schema, key.strip(), text)
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


def _canonical_key(schema: type[BaseModel], key: str, text: str) -> str:
    """A moved key's new place; a shorthand's key when its value is not a mapping."""
    key = getattr(schema, "moved_keys", {}).get(key, key)
    target = getattr(schema, "shorthands", {}).get(key)
    if target is None:
        return key
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    return key if isinstance(value, dict) else target


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
    parts = key.split(".")
    given = next((origin[k] for k in (".".join(parts[:i]) for i in range(len(parts), 0, -1)) if k in origin),
                 None)
    if err["type"] == "extra_forbidden":
        src = f" (from {given})" if given else ""
        return f"unknown config key {key!r}{src}; {_closest(key, valid_keys(schema))}"
    try:
        annotation = _field_annotation(schema, key) if key else schema
    except KeyError:
        annotation = None
    if not key or (_is_model(annotation) and err["type"] in ("value_error", "assertion_error")):
        # A section's (or the whole config's) own check: its message names the keys at fault;
        # the section's values, often dozens of them, would bury it.
        return _message(err)
    expected = _type_name(annotation) if annotation is not None else "a valid value"
    got = err.get("input")
    src = f" from {given}" if given else ""
    return f"{key} expects {expected}, got {got!r}{src} ({err['msg']})"


def _is_model(annotation: Any) -> bool:
    model = _unwrap_model(annotation)
    return isinstance(model, type) and issubclass(model, BaseModel)


def _message(err: Mapping[str, Any]) -> str:
    """A validator's own words, without pydantic's ``Value error, `` prefix."""
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg[len(prefix):]
    return msg


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
        for below in [k for k in origin if k.startswith(key + ".")]:
            del origin[below]  # the override replaced that part of the file
        origin[key] = repr(item)
    try:
        return schema.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_explain(schema, exc, origin)) from None


# --------------------------------------------------------------------------- the entry point's first line

def load_config(schema: type[C], argv: Sequence[str] | None = None, *, prog: str | None = None) -> C:
    """The task entry point's first line: argv -> validated config, or exit 2 with one line.

    With ``--resume RUN_ID`` and no ``--config``, the base is that run's resolved config,
    so the continued run has the same fingerprint as the one it continues.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = prog or command_name(schema.task)
    try:
        opts, overrides, want_help = parse_argv(argv)
        opts.command = prog
        if want_help:
            keys = "\n".join(_describe_key(schema, k, _defaults(schema)) for k in valid_keys(schema))
            print(USAGE.format(prog=prog, task=schema.task, keys=keys))
            raise SystemExit(0)
        base = None
        if opts.resume:
            from tracking.store import check_resumable, resolved_config_of

            check_resumable(opts.resume, schema.task)   # its client() checks the store answers first
            base = resolved_config_of(opts.resume) if opts.base_config is None else None
        cfg = resolve_config(schema, opts.base_config, overrides, base=base)
        if base is None:
            found = find_config(schema, opts.base_config)
            opts.base_config = str(found) if found else None
        else:
            opts.base_config = f"run:{opts.resume}"
        from tracking.seeding import check_device
        from tracking.store import check_experiment_env, check_reachable, tracking_uri

        check_device(cfg.device)
        check_reachable(tracking_uri())  # before any run exists: one line, not a long retry loop
        if not opts.experiment:
            check_experiment_env()
        if opts.topology:  # under torchrun from here on (or refused): after every check above
            from tracking.distributed.launch import maybe_relaunch

            maybe_relaunch(cfg, opts, argv)
    except ConfigError as exc:
        exit_with_config_error(str(exc), prog)
    cfg._launch = opts
    return cfg


def exit_with_config_error(message: str, prog: "str | TaskConfig") -> "typing.NoReturn":
    """One line on stderr, exit 2: for any user error a task finds before its run starts
    (config, overrides, data settings). ``prog`` is the command, or the task's config (whose
    ``launch.command`` it is). Under ``mlflow run`` the pre-created run is failed with the
    reason, so it neither stays RUNNING nor fails silently."""
    if isinstance(prog, TaskConfig):
        prog = prog.launch.command if prog._launch is not None else command_name(prog.task)
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
        from tracking import runs
        from tracking.store import client

        runs.end(client(), run_id, "FAILED", reason=f"ConfigError: {message}", tags={T.STATUS: "failed"})
    except Exception:
        pass


__all__ = [
    "EXIT_CONFIG_ERROR", "RESEARCH_STATUSES", "USAGE", "CheckpointConfig", "ConfigError", "DivergenceConfig",
    "LaunchOptions", "Section", "TaskConfig", "digest", "execution", "exists", "exit_with_config_error",
    "experiment_fields", "find_config", "fingerprint", "flatten", "get_dotted", "group_key", "is_execution",
    "command_name", "load_config", "parse_argv", "parse_override", "parse_value", "read_yaml", "resolve_config", "set_dotted",
    "valid_keys",
]
