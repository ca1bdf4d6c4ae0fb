"""Cells of a run matrix and their identities.

A cell's identity is the fingerprint of its *resolved* config (``tracking.fingerprint``),
never its position in the matrix: reordering a spec, adding a seed or a value leaves every
existing cell's fingerprint unchanged, so the finished ones are still recognised.
"""
from __future__ import annotations

import itertools
import json
from typing import Any, Callable, Iterator, Mapping, Sequence

from sweeps.template import Template, canonical, get_path, separable
from tracking import tags as T
from tracking.config import (ConfigError, TaskConfig, digest, experiment_fields, find_config, fingerprint,
                             group_key, parse_override, read_yaml, resolve_config, set_dotted)


def override_text(key: str, value: Any) -> str:
    """``key=value`` that the override grammar parses back to ``value``."""
    text = value if isinstance(value, str) else json.dumps(value)
    return f"{key}={text}"


class Cell:
    """One unit of work: a task config that a single run (or its retries) completes.

    ``config`` and ``group`` may be computed on first use: a plan of a million cells needs
    only their fingerprints, and a cell's config is read when it is launched.
    """

    __slots__ = ("index", "values", "overrides", "_config", "fingerprint", "_group", "tags",
                 "_resolve", "name_prefix", "short_name")

    def __init__(self, index: int, values: dict[str, Any], overrides: list[str], config: TaskConfig | None,
                 fingerprint: str, group: str, tags: dict[str, str] | None = None,
                 resolve: Callable[[list[str]], TaskConfig] | None = None) -> None:
        self.index, self.values, self.overrides = index, values, overrides
        """``values``: what varies (matrix/zip keys, seed, condition); ``overrides``: every
        override (fixed ones included), in the ``key=value`` form a task accepts."""
        self._config, self.fingerprint, self._group = config, fingerprint, group
        self.tags = dict(tags or {})
        self._resolve = resolve
        self.name_prefix = ""
        self.short_name: str | None = None  # the sweep's readable run name, set once cells are known

    @property
    def config(self) -> TaskConfig:
        if self._config is None and self._resolve is not None:
            self._config = self._resolve(self.overrides)
        return self._config  # type: ignore[return-value]

    @property
    def group(self) -> str:
        if not self._group:
            self._group = group_key(self.config)
        return self._group

    @property
    def seed(self) -> int:
        if "seed" in self.values:
            return int(self.values["seed"])
        return int(self.config.seed)

    @property
    def condition(self) -> str:
        if "condition" in self.values:
            return str(self.values["condition"])
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


def axes(spec: Any) -> list[list[dict[str, Any]]]:
    """The spec's axes, slowest first: seeds, conditions, each zip group, each matrix key.

    A row is what one value of the axis sets: ``{key: value}`` (``condition`` and its bundle
    for a condition). Their product, in this order, is the cells in the order they run.
    """
    out: list[list[dict[str, Any]]] = []
    if spec.seeds:
        out.append([{"seed": s} for s in spec.seeds])
    if spec.conditions:
        out.append([{**bundle, "condition": name} for name, bundle in spec.conditions.items()])
    for group in spec.zip or []:
        keys = list(group)
        out.append([dict(zip(keys, vals)) for vals in zip(*(group[k] for k in keys))])
    for key, values in (spec.matrix or {}).items():
        out.append([{key: v} for v in values])
    return out


def _row_values(spec: Any, row: dict[str, Any]) -> dict[str, Any]:
    """What a row shows of itself: a condition's name, not its bundle."""
    if spec.conditions and "condition" in row and row.get("condition") in spec.conditions:
        return {"condition": row["condition"]}
    return row


def _cell_values(spec: Any, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    seed = None
    for row in rows:
        shown = _row_values(spec, row)
        if spec.seeds and set(row) == {"seed"}:
            seed = row["seed"]
            continue
        values.update(shown)
    if seed is not None:
        values["seed"] = seed
    return values


def _where(values: Mapping[str, Any]) -> str:
    return f" in cell {{{', '.join(f'{k}: {v}' for k, v in values.items())}}}" if values else ""


def expand(spec: Any, schema: type[TaskConfig]) -> list[Cell]:
    """``conditions x zip x matrix x seeds`` -> validated cells (seeds vary slowest).

    Seeds outermost means an interrupted sweep has whole seeds of every method rather than
    every seed of the first method. Cells that resolve to the same config (a matrix value
    equal to the base) collapse into one: identical work is done once. Raises ConfigError
    (nothing written) when any cell's overrides do not fit the task's schema.
    """
    return list(iter_cells(spec, schema))


def iter_cells(spec: Any, schema: type[TaskConfig]) -> Iterator[Cell]:
    """The cells of :func:`expand`, one at a time, checked before the first is yielded where
    each value is checked on its own (:mod:`sweeps.template`), else as they come."""
    return Expansion(spec, schema).cells()


class Expansion:
    """The base config read once, each axis row parsed and validated once, then the cells."""

    def __init__(self, spec: Any, schema: type[TaskConfig]) -> None:
        self.spec, self.schema = spec, schema
        self.fixed = [override_text(k, v) for k, v in (spec.overrides or {}).items()]
        # The base file is read (and checked, with its own error messages) once, not per cell.
        base_cfg = resolve_config(schema, spec.config, self.fixed)
        path = find_config(schema, spec.config)
        self.base = read_yaml(path) if path is not None else {}
        self.axes = axes(spec)
        self.texts = [[[override_text(k, v) for k, v in row.items()] for row in axis] for axis in self.axes]
        self.parsed = [[[parse_override(schema, t) for t in row] for row in axis] for axis in self.texts]
        self.trees = [self._row_tree(a, i) for a, axis in enumerate(self.axes) for i in range(len(axis))]
        self.template = self._template(base_cfg)

    def _row_tree(self, a: int, i: int) -> dict[str, Any]:
        """One axis row validated in the base's context: its errors name the row."""
        try:
            cfg = resolve_config(self.schema, None, self.fixed + self.texts[a][i], base=self.base)
        except ConfigError as exc:
            raise ConfigError(f"{exc}{_where(_row_values(self.spec, self.axes[a][i]))}") from None
        return {"task": cfg.task, "config": experiment_fields(cfg)}

    def _resolve(self, overrides: list[str]) -> TaskConfig:
        return resolve_config(self.schema, None, overrides, base=self.base)

    def _overrides(self, idx: Sequence[int]) -> list[str]:
        """Fixed ones first, the seed last (as a task's command line has them)."""
        out = list(self.fixed)
        for a, i in enumerate(idx):
            if not (a == 0 and self.spec.seeds):
                out += self.texts[a][i]
        return out + (self.texts[0][idx[0]] if self.spec.seeds else [])

    def _values(self, idx: Sequence[int]) -> dict[str, Any]:
        return _cell_values(self.spec, [self.axes[a][i] for a, i in enumerate(idx)])

    def _indices(self) -> Iterator[tuple[int, ...]]:
        return itertools.product(*(range(len(axis)) for axis in self.axes))

    # ------------------------------------------------------------------ the template's way
    def _template(self, base_cfg: TaskConfig) -> Template | None:
        """A :class:`Template` over the varied paths, or None where a cell must be validated
        whole: a schema with cross-field validators, axes that touch the same key, or a row
        whose validation changed anything but its own keys."""
        if not self.axes or not separable(self.schema):
            return None
        base_tree = {"task": base_cfg.task, "config": experiment_fields(base_cfg)}
        paths = self._paths(base_tree)
        if paths is None:
            return None
        flat = [p for axis_paths in paths for p in axis_paths]
        self.slots: list[list[list[tuple[int, str]]]] = []
        k = 0
        for a, axis_paths in enumerate(paths):
            rows = []
            for i in range(len(self.axes[a])):
                tree = self.trees[sum(len(x) for x in self.axes[:a]) + i]
                if not _same_elsewhere(tree, base_tree, axis_paths):
                    return None
                rows.append([(k + j, canonical(get_path(tree["config"], p))) for j, p in enumerate(axis_paths)])
            self.slots.append(rows)
            k += len(axis_paths)
        template = Template(base_cfg.task, base_tree["config"], flat)
        self.slots = [[[(template.position(j), text) for j, text in row] for row in rows] for rows in self.slots]
        return template if self._agrees(template) else None

    def _paths(self, base_tree: dict[str, Any]) -> list[list[tuple[str, ...]]] | None:
        """Per axis, the experiment-field paths it sets (execution fields are not in a
        fingerprint); None when two axes share a path or one holds the other."""
        out: list[list[tuple[str, ...]]] = []
        taken: list[tuple[str, ...]] = []
        for axis in self.parsed:
            keys = {tuple(key.split(".")) for row in axis for key, _ in row}
            mine = []
            for path in sorted(keys):
                try:
                    get_path(base_tree["config"], path)
                except KeyError:
                    if any(_exists(self.trees, path)):
                        return None  # present in some rows only: not a plain leaf
                    continue
                if any(path[:len(t)] == t or t[:len(path)] == path for t in taken + mine):
                    return None
                mine.append(path)
            taken += mine
            out.append(mine)
        return out

    def _agrees(self, template: Template) -> bool:
        """The first and the last cell, validated whole, have the template's fingerprints."""
        ends = [tuple(0 for _ in self.axes), tuple(len(axis) - 1 for axis in self.axes)]
        for idx in ends:
            buf = self._fill(idx, template.buffer())
            cfg = resolve_config(self.schema, None, self._overrides(idx), base=self.base)
            if template.hash(buf) != fingerprint(cfg):
                return False
        return True

    def _fill(self, idx: Sequence[int], buf: list[str]) -> list[str]:
        slots = self.slots
        for a, i in enumerate(idx):
            for pos, text in slots[a][i]:
                buf[pos] = text
        return buf

    def index_rows(self) -> Iterator[tuple[int, tuple[int, ...], str]]:
        """``(cell index, row of each axis, fingerprint)``, identical cells once: by template
        (one join and one hash each) where it applies, else each cell validated whole."""
        if self.template is None:
            yield from self._full_rows()
            return
        buf, hash_ = self.template.buffer(), Template.hash
        seen: set[str] = set()
        n = 0
        for idx in self._walk(buf):
            fp = hash_(buf)
            if fp not in seen:
                seen.add(fp)
                yield n, idx, fp
                n += 1

    def _walk(self, buf: list[str]) -> Iterator[tuple[int, ...]]:
        """The product of the axes (the last varies fastest), keeping ``buf`` filled with the
        current cell's values: a step rewrites only the axes that moved (mostly one)."""
        sizes = [len(axis) for axis in self.axes]
        slots = self.slots
        idx = [0] * len(sizes)
        self._fill(idx, buf)
        last = len(sizes) - 1
        while True:
            yield tuple(idx)
            a = last
            while a >= 0:
                idx[a] += 1
                if idx[a] < sizes[a]:
                    break
                idx[a] = 0
                for pos, text in slots[a][0]:
                    buf[pos] = text
                a -= 1
            if a < 0:
                return
            for pos, text in slots[a][idx[a]]:
                buf[pos] = text

    def _full_rows(self) -> Iterator[tuple[int, tuple[int, ...], str]]:
        fixed_tree = json.loads(json.dumps(self.base))
        for item in self.fixed:
            set_dotted(fixed_tree, *parse_override(self.schema, item))
        text = json.dumps(fixed_tree)
        seen: set[str] = set()
        n = 0
        for idx in self._indices():
            tree = json.loads(text)
            for a, i in enumerate(idx):
                for key, value in self.parsed[a][i]:
                    set_dotted(tree, key, value)
            try:
                cfg = resolve_config(self.schema, None, (), base=tree)
            except ConfigError as exc:
                raise ConfigError(f"{exc}{_where(self._values(idx))}") from None
            fp = fingerprint(cfg)
            if fp not in seen:
                seen.add(fp)
                yield n, idx, fp
                n += 1

    def cells(self) -> Iterator[Cell]:
        """Cells whose config is resolved when first read (a plan needs only fingerprints)."""
        for n, idx, fp in self.index_rows():
            yield Cell(n, self._values(idx), self._overrides(idx), None, fp, "", resolve=self._resolve)


def _exists(trees: Sequence[dict[str, Any]], path: tuple[str, ...]) -> Iterator[bool]:
    for tree in trees:
        try:
            get_path(tree["config"], path)
            yield True
        except KeyError:
            yield False


def _same_elsewhere(tree: dict[str, Any], base: dict[str, Any], paths: Sequence[tuple[str, ...]]) -> bool:
    """``tree`` equals ``base`` but at ``paths``: the row's validation touched nothing else."""
    a, b = json.loads(json.dumps(tree)), json.loads(json.dumps(base))
    for path in paths:
        for t in (a, b):
            get_path(t["config"], path[:-1])[path[-1]] = None
    return a == b


# ---------------------------------------------------------------------------- foreign projects

class ForeignCell(Cell):
    """A cell of an MLflow project labrun did not write: ``-P`` parameters, no task schema."""

    __slots__ = ("project", "version", "seed_param")

    def __init__(self, index: int, values: dict[str, Any], overrides: list[str], fingerprint: str,
                 group: str, tags: dict[str, str], *, project: str, version: str | None,
                 seed_param: str = "seed") -> None:
        super().__init__(index, values, overrides, None, fingerprint, group, tags)
        self.project, self.version, self.seed_param = project, version, seed_param

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
    cells: list[Cell] = []
    seen: set[str] = set()
    for seed, zrow, mrow in itertools.product(seeds, _zipped(spec.zip or []), _axis(spec.matrix or {})):
        values = {**zrow, **mrow, **({"seed": seed} if seed is not None else {})}
        cell = foreign_cell(ep, len(cells), values, {**(spec.overrides or {}), **zrow, **mrow}, seed,
                            spec.seed_param)
        if cell.fingerprint not in seen:
            seen.add(cell.fingerprint)
            cells.append(cell)
    return cells


def foreign_cell(ep: Any, index: int, values: dict[str, Any], params: dict[str, Any], seed: int | None,
                 seed_param: str) -> ForeignCell:
    """One cell of a foreign entry point: ``params`` (and the seed, as ``seed_param``) checked
    against its declared parameters, then fingerprinted (sweeps and studies alike)."""
    asked = {**params, **({seed_param: seed} if seed is not None else {})}
    checked = ep.check(asked, _where(values))
    identity = {"project": ep.name, "entry": ep.entry, "version": ep.version or ""}
    fp = digest({**identity, "params": checked})
    group = digest({**identity, "params": {k: v for k, v in checked.items() if k != seed_param}})
    tags = {T.TASK: foreign_task(ep), T.FINGERPRINT: fp, T.GROUP: group, T.PROJECT: ep.uri, T.FOREIGN: "true"}
    if seed is not None:
        tags[T.SEED] = str(seed)
    return ForeignCell(index, values, [f"{k}={checked[k]}" for k in sorted(asked)], fp, group, tags,
                       project=ep.work_dir, version=ep.version, seed_param=seed_param)


def foreign_task(ep: Any) -> str:
    """The ``labrun.task`` of a foreign project's runs: ``<project name>.<entry point>``."""
    return f"{ep.name}.{ep.entry}"
