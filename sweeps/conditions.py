"""Experiment-conditions files: a group's JSON list of named conditions, read as a sweep.

Format (the keys a research group already writes; everything but the list is optional)::

    {"entry": "anomaly", "seeds": [0, 1, 2], "config": "quick",
     "experiment_conditions": [
        {"name": "patchcore_A", "description": "...",
         "config": {"model_type": "patchcore", "source_domain": "A", "max_epochs": 1}}]}

Each condition becomes one ``conditions`` bundle of a :class:`~sweeps.spec.SweepSpec`, so
each is a cell (times the seeds), its name the ``labrun.condition`` tag. A condition's
``config`` keys are dotted keys of the task's schema, nested objects (flattened), or the
group's flat names, which the schema maps through its own ``condition_key(key, config)``
classmethod when it has one. Any other top-level key is a sweep-spec key (``seeds``,
``parallel``, ``launcher``, ``experiment``...). ``entry`` defaults to the task whose
``projects/<task>/conditions/`` folder holds the file.

Every condition is checked against the task's schema here, before anything runs: a
malformed file, a missing name, or an unknown key or value is one line naming the entry.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from tracking.config import ConfigError, exists, flatten, resolve_config

LIST_KEY = "experiment_conditions"
CONDITION_KEYS = ("name", "description", "config")


def is_conditions_file(path: str | Path) -> bool:
    """What the spec loader asks: is this a conditions file rather than a YAML spec?"""
    return str(path).endswith(".json")


def _read_json(path: Path) -> Any:
    if not exists(path):
        raise ConfigError(f"conditions file {str(path)!r} not found; pass an existing .json file "
                          f"(e.g. projects/anomaly/conditions/base.json)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"conditions file {path.name}: malformed JSON at line {exc.lineno}, "
                          f"column {exc.colno}: {exc.msg}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read conditions file {str(path)!r}: {exc.strerror}") from None


def _default_entry(path: Path) -> str | None:
    """``projects/<task>/conditions/x.json`` -> ``<task>``."""
    parent = path.resolve().parent
    return parent.parent.name if parent.name == "conditions" else None


def _spec_keys() -> list[str]:
    from sweeps.spec import SweepSpec

    return [k for k in SweepSpec.with_launchers().model_fields if k != "conditions"]


def _condition_overrides(schema: type, cond: Mapping[str, Any]) -> dict[str, Any]:
    """A condition's ``config`` -> dotted overrides of the task schema."""
    config = cond.get("config", {})
    mapper = getattr(schema, "condition_key", None)
    out: dict[str, Any] = {}
    for key, value in flatten(config).items():
        dotted = mapper(key, config) if callable(mapper) else key
        out[dotted] = value
    return out


def _check_condition(i: int, cond: Any, seen: set[str], where: str) -> str:
    """The entry's name, or a ConfigError naming entry ``i`` and what is wrong with it."""
    if not isinstance(cond, dict):
        raise ConfigError(f"{where}: entry {i} of {LIST_KEY} must be an object with name, description, "
                          f"config; got {type(cond).__name__}")
    name = cond.get("name")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{where}: entry {i} of {LIST_KEY} has no 'name'; every condition needs a "
                          f"unique non-empty name (it becomes the labrun.condition tag)")
    label = f"{where}: condition {name!r} (entry {i})"
    extra = sorted(set(cond) - set(CONDITION_KEYS))
    if extra:
        raise ConfigError(f"{label}: unknown key {extra[0]!r}; valid keys: {', '.join(CONDITION_KEYS)}")
    if name in seen:
        raise ConfigError(f"{label}: the name is used twice; condition names must be unique")
    if not isinstance(cond.get("config", {}), dict):
        raise ConfigError(f"{label}: 'config' must be an object of config keys to values")
    if not isinstance(cond.get("description", ""), str):
        raise ConfigError(f"{label}: 'description' must be text")
    return name


def spec_data(path: str | Path) -> dict[str, Any]:
    """A conditions file -> the mapping :class:`~sweeps.spec.SweepSpec` validates.

    Raises ConfigError (one line, naming the file and the entry) and writes nothing.
    """
    from tracking.tasks import load_task

    p = Path(path)
    where = f"conditions file {p.name}"
    doc = _read_json(p)
    if not isinstance(doc, dict) or not isinstance(doc.get(LIST_KEY), list) or not doc[LIST_KEY]:
        raise ConfigError(f"{where}: expected an object with a non-empty list {LIST_KEY!r} "
                          f"of {{name, description, config}} entries")
    valid = _spec_keys()
    unknown = sorted(k for k in doc if k != LIST_KEY and k not in valid)
    if unknown:
        raise ConfigError(f"{where}: unknown top-level key {unknown[0]!r}; valid: {LIST_KEY}, "
                          f"{', '.join(valid)}")
    data = {k: v for k, v in doc.items() if k != LIST_KEY}
    data.setdefault("entry", _default_entry(p))
    if not data["entry"]:
        raise ConfigError(f"{where}: name the task with \"entry\" (an MLproject entry point), or keep "
                          f"the file in projects/<task>/conditions/")
    schema = load_task(data["entry"]).schema
    conditions: dict[str, dict[str, Any]] = {}
    lines = []
    for i, cond in enumerate(doc[LIST_KEY]):
        name = _check_condition(i, cond, set(conditions), where)
        overrides = _condition_overrides(schema, cond)
        try:
            resolve_config(schema, data.get("config"),
                           _override_list(data.get("overrides") or {}) + _override_list(overrides))
        except ConfigError as exc:
            raise ConfigError(f"{where}: condition {name!r} (entry {i}): {exc}") from None
        conditions[name] = overrides
        if cond.get("description"):
            lines.append(f"{name}: {cond['description']}")
    data["conditions"] = conditions
    data.setdefault("name", p.stem)
    data["description"] = " | ".join(t for t in (data.get("description", ""), "; ".join(lines)) if t)[:2000]
    return data


def _override_list(overrides: Mapping[str, Any]) -> list[str]:
    from sweeps.matrix import override_text

    return [override_text(k, v) for k, v in overrides.items()]


def main(argv: list[str] | None = None) -> int:
    """``python -m sweeps.conditions FILE``: check a conditions file and list its cells."""
    import argparse

    from tracking.config import exit_with_config_error

    ap = argparse.ArgumentParser(prog="python -m sweeps.conditions",
                                 description="Check an experiment-conditions JSON file and list the "
                                             "sweep cells it expands to (nothing runs).")
    ap.add_argument("file")
    args = ap.parse_args(argv)
    try:
        from sweeps.matrix import expand
        from sweeps.spec import SweepSpec
        from tracking.tasks import load_task

        data = spec_data(args.file)
        cells = expand(SweepSpec.model_validate(data), load_task(data["entry"]).schema)
    except ConfigError as exc:
        exit_with_config_error(str(exc), "python -m sweeps.conditions")
    print(f"{args.file}: entry {data['entry']}, {len(data['conditions'])} conditions, {len(cells)} cells")
    for cell in cells:
        print(f"  {cell.fingerprint}  {cell.label}")
    return 0


__all__ = ["spec_data", "is_conditions_file", "LIST_KEY", "main"]

if __name__ == "__main__":
    raise SystemExit(main())
