"""Fingerprints of a large matrix without validating every cell: one template per sweep.

A cell's fingerprint is the digest of its resolved experiment fields. Validating each cell
with pydantic and dumping it costs ~0.5 ms, so a 100,000-cell plan took half a minute. When
the task's schema checks every field on its own (no model validator, no field validator that
reads other fields), a cell's resolved tree is the base tree with each axis' values, each
validated once per value in the base's context. The canonical JSON of the base tree is then
cut at the varied paths, and a cell's JSON is those pieces joined with its values' JSON: one
``join`` and one SHA-256 per cell, the same digest :func:`tracking.identity.digest` makes.
A schema with cross-field validators keeps the per-cell validation (``separable`` says which),
and a few cells of every template are checked against the full validation before it is used.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
from typing import Any, Iterable, Sequence

from pydantic import BaseModel

_MARK = "\x00slot{}\x00"


# TaskConfig's own "before" validator only moves old keys to their new place and fills the
# task's thread default: a row it rewrites changes keys other than its own, which the template
# already refuses (and a few cells of every template are checked against full validation).
PLATFORM_VALIDATORS = frozenset({"_platform_keys"})


@functools.cache
def separable(schema: type[BaseModel]) -> bool:
    """True when no validator of ``schema`` (at any depth) can see two fields at once."""
    seen: set[type] = set()

    def walk(model: type[BaseModel]) -> bool:
        if model in seen:
            return True
        seen.add(model)
        decorators = model.__pydantic_decorators__
        if any(name not in PLATFORM_VALIDATORS for name in decorators.model_validators):
            return False
        for dec in decorators.field_validators.values():
            if len(inspect.signature(dec.func).parameters) > 1 + (dec.info.mode == "wrap"):
                return False  # it takes a ValidationInfo: it may read info.data
        for info in model.model_fields.values():
            for kind in _models_in(info.annotation):
                if not walk(kind):
                    return False
        return True

    return walk(schema)


def _models_in(annotation: Any) -> Iterable[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        yield from _models_in(arg)


def canonical(value: Any) -> str:
    """JSON exactly as :func:`tracking.identity.digest` writes it."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def get_path(tree: Any, path: Sequence[str]) -> Any:
    """The value at ``path`` of a nested dict; KeyError when a step is missing."""
    for part in path:
        if not isinstance(tree, dict):
            raise KeyError(part)
        tree = tree[part]
    return tree


class Template:
    """The canonical JSON of ``{"task": task, "config": tree}`` cut at ``paths``; ``digest``
    of one value's JSON per path (in ``paths`` order) is that cell's 16-hex identity."""

    def __init__(self, task: str, tree: dict[str, Any], paths: Sequence[tuple[str, ...]]) -> None:
        marked = json.loads(json.dumps(tree))
        for i, path in enumerate(paths):
            node = get_path(marked, path[:-1])
            node[path[-1]] = _MARK.format(i)
        text = canonical({"task": task, "config": marked})
        self.pieces: list[str] = []
        self.order: list[int] = []
        rest = text
        while True:
            hits = [(rest.find(json.dumps(_MARK.format(i))), i) for i in range(len(paths))]
            hits = [(pos, i) for pos, i in hits if pos >= 0]
            if not hits:
                break
            pos, i = min(hits)
            self.pieces.append(rest[:pos])
            self.order.append(i)
            rest = rest[pos + len(json.dumps(_MARK.format(i))):]
        self.tail = rest

    def buffer(self) -> list[str]:
        """The pieces with a gap before each slot's value: fill with :meth:`position`, hash with
        :meth:`hash` (a cell rewrites only its slots, nothing is rebuilt)."""
        out: list[str] = []
        for piece in self.pieces:
            out += [piece, ""]
        return out + [self.tail]

    def position(self, slot: int) -> int:
        """Where slot ``slot``'s value goes in :meth:`buffer`."""
        return 2 * self.order.index(slot) + 1

    @staticmethod
    def hash(buffer: list[str]) -> str:
        return hashlib.sha256("".join(buffer).encode()).hexdigest()[:16]

    def digest(self, values: Sequence[str]) -> str:
        """The identity of one value's JSON per path, in ``paths`` order."""
        buf = self.buffer()
        for slot, text in enumerate(values):
            buf[self.position(slot)] = text
        return self.hash(buf)
