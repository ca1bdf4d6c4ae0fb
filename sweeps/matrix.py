"""Cells of a run matrix and their identities.

A cell's identity is the fingerprint of its *resolved* config (``tracking.fingerprint``),
never its position in the matrix: reordering a spec, adding a seed or a value leaves every
existing cell's fingerprint unchanged, so the finished ones are still recognised.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from tracking import tags as T
from tracking.config import (ConfigError, digest, TaskConfig, find_config, fingerprint, group_key, read_yaml,
                             resolve_config)


def override_text(key: str, value: Any) -> str:
    """``key=value`` that the override grammar parses back to ``value``."""
    text = value if isinstance(value, str) else json.dumps(value)
    return f"{key}={text}"


@dataclass
class Cell:
    """One unit of work: a task config that a single run (or its retries) completes."""

    index: int
    values: dict[str, Any]
    """What varies in this cell (matrix/zip keys, seed, condition), for tables and names."""
    overrides: list[str]
    """Every override (fixed ones included), in the ``key=value`` form a task accepts."""
    config: TaskConfig
    fingerprint: str
    group: str
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return int(self.config.seed)

    @property
    def condition(self) -> str:
        return str(self.config.condition)

    @property
    def label(self) -> str:
        """Short human name: the varying values, e.g. ``mining.strategy=random seed=3``."""
        parts = [f"{k}={v}" for k, v in self.values.items() if k not in ("seed", "condition")]
        if "condition" in self.values:
            parts.insert(0, f"condition={self.values['condition']}")
        if "seed" in self.values:
            parts.append(f"seed={self.values['seed']}")
        return " ".join(parts) or "base"

    def run_name(self, entry: str) -> str:
        bits = [str(v) for k, v in self.values.items() if k != "seed"]
        if "seed" in self.values:
            bits.append(f"s{self.values['seed']}")
        return "-".join([entry, *bits])[:200]


def _axis(mapping: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    keys = list(mapping)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(mapping[k] for k in keys))]


def _zipped(groups: Sequence[Mapping[str, Sequence[Any]]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{}]
    for group in groups:
        keys = list(group)
        rows = [dict(zip(keys, vals)) for vals in zip(*(group[k] for k in keys))]
        out = [{**a, **b} for a in out for b in rows]
    return out


def expand(spec: Any, schema: type[TaskConfig]) -> list[Cell]:
    """``conditions x zip x matrix x seeds`` -> validated cells (seeds vary slowest).

    Seeds outermost means an interrupted sweep has whole seeds of every method rather than
    every seed of the first method. Cells that resolve to the same config (a matrix value
    equal to the base) collapse into one: identical work is done once. Raises ConfigError
    (nothing written) when any cell's overrides do not fit the task's schema.
    """
    fixed = [override_text(k, v) for k, v in (spec.overrides or {}).items()]
    # The base file is read (and checked, with its own error messages) once, not per cell.
    resolve_config(schema, spec.config, fixed)
    path = find_config(schema, spec.config)
    base = read_yaml(path) if path is not None else {}
    conditions: list[tuple[str | None, dict[str, Any]]] = (
        list(spec.conditions.items()) if spec.conditions else [(None, {})])
    zipped = _zipped(spec.zip or [])
    grid = _axis(spec.matrix or {})
    seeds: list[int | None] = list(spec.seeds) if spec.seeds else [None]
    cells: list[Cell] = []
    seen: dict[str, Cell] = {}
    for seed, (cond, bundle), zrow, mrow in itertools.product(seeds, conditions, zipped, grid):
        values: dict[str, Any] = {}
        overrides = list(fixed)
        if cond is not None:
            overrides += [override_text(k, v) for k, v in bundle.items()]
            overrides.append(override_text("condition", cond))
            values["condition"] = cond
        for row in (zrow, mrow):
            overrides += [override_text(k, v) for k, v in row.items()]
            values.update(row)
        if seed is not None:
            overrides.append(override_text("seed", seed))
            values["seed"] = seed
        try:
            cfg = resolve_config(schema, None, overrides, base=base)
        except ConfigError as exc:
            where = f" in cell {{{', '.join(f'{k}: {v}' for k, v in values.items())}}}" if values else ""
            raise ConfigError(f"{exc}{where}") from None
        fp = fingerprint(cfg)
        if fp in seen:
            continue
        cell = Cell(len(cells), values, overrides, cfg, fp, group_key(cfg))
        seen[fp] = cell
        cells.append(cell)
    return cells


# ---------------------------------------------------------------------------- foreign projects

@dataclass
class ForeignCell(Cell):
    """A cell of an MLflow project labrun did not write: ``-P`` parameters, no task schema."""

    project: str = ""
    version: str | None = None
    seed_param: str = "seed"

    @property
    def seed(self) -> int:
        return int(self.values.get("seed", 0))

    @property
    def condition(self) -> str:
        return str(self.values.get("condition", "default"))


def expand_foreign(spec: Any, ep: Any) -> list[Cell]:
    """``matrix x zip x seeds`` over an entry point's declared parameters (``ep``: a
    :class:`tracking.tasks.ProjectEntry`).

    Every cell's parameters are checked against the declared names and types first (a bad
    one: ConfigError, nothing launched). The fingerprint is the project, entry point,
    version and every parameter with defaults filled in, so spelling out a default changes
    nothing; the group is the same without the seed parameter.
    """
    if spec.conditions:
        raise ConfigError("conditions need a labrun task; for a foreign project put the parameters "
                          "in 'matrix' or 'zip'")
    if spec.config is not None:
        raise ConfigError(f"'config' is a labrun task's base YAML; entry point {ep.entry!r} of "
                          f"{ep.uri} takes -P parameters: put them in 'overrides'")
    if spec.seeds and spec.seed_param not in ep.parameters:
        raise ConfigError(f"seeds need a parameter {spec.seed_param!r} in entry point {ep.entry!r} "
                          f"of {ep.uri} (declared: {', '.join(ep.parameters) or 'none'}); "
                          f"set seed_param to the one that takes the seed")
    seeds: list[int | None] = list(spec.seeds) if spec.seeds else [None]
    identity = {"project": ep.name, "entry": ep.entry, "version": ep.version or ""}
    cells: list[Cell] = []
    seen: set[str] = set()
    for seed, zrow, mrow in itertools.product(seeds, _zipped(spec.zip or []), _axis(spec.matrix or {})):
        values = {**zrow, **mrow, **({"seed": seed} if seed is not None else {})}
        asked = {**(spec.overrides or {}), **zrow, **mrow,
                 **({spec.seed_param: seed} if seed is not None else {})}
        where = f" in cell {{{', '.join(f'{k}: {v}' for k, v in values.items())}}}" if values else ""
        params = ep.check(asked, where)
        fp = digest({**identity, "params": params})
        if fp in seen:
            continue
        seen.add(fp)
        group = digest({**identity, "params": {k: v for k, v in params.items() if k != spec.seed_param}})
        tags = {T.TASK: foreign_task(ep), T.FINGERPRINT: fp, T.GROUP: group,
                T.PROJECT: ep.uri, T.FOREIGN: "true"}
        if seed is not None:
            tags[T.SEED] = str(seed)
        cells.append(ForeignCell(len(cells), values, [f"{k}={params[k]}" for k in sorted(asked)],
                                 None, fp, group, tags, project=ep.work_dir, version=ep.version,
                                 seed_param=spec.seed_param))
    return cells


def foreign_task(ep: Any) -> str:
    """The ``labrun.task`` of a foreign project's runs: ``<project name>.<entry point>``."""
    return f"{ep.name}.{ep.entry}"
