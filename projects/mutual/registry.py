"""Name -> implementation lookups that stay torch-free until an implementation is asked for.

The config schema checks method, model and task names while a config is resolved (before a
run exists, in the ``labrun`` CLI, for every sweep cell), so the names must be known without
importing torch. A registry therefore maps each name to a ``"module:attribute"`` string and
imports the module only in :meth:`LazyRegistry.get`. An unknown name is one line that lists
every valid name.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any, Iterable, Mapping


class UnknownNameError(ValueError):
    """A method, model, task, dataset or condition name that does not exist; one line."""


def unknown(kind: str, name: Any, valid: Iterable[str], hint: str = "") -> UnknownNameError:
    """``unknown method 'foo'; valid: independent, naive, ssmo-hard, ssmo-soft``"""
    extra = f" ({hint})" if hint else ""
    return UnknownNameError(f"unknown {kind} {name!r}; valid: {', '.join(valid)}{extra}")


class LazyRegistry:
    """``name -> "package.module:attribute"``; :meth:`get` imports on first use."""

    def __init__(self, kind: str, entries: Mapping[str, str]):
        self.kind = kind
        self._entries = dict(entries)

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def check(self, name: str) -> str:
        """``name`` itself, or :class:`UnknownNameError` listing the valid names."""
        if name not in self._entries:
            raise unknown(self.kind, name, self.names())
        return name

    def get(self, name: str) -> Any:
        target = self._entries[self.check(name)]
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)


def module_names(package_file: str, exclude: Iterable[str] = ()) -> list[str]:
    """Modules beside ``package_file`` (an ``__init__.py``), found without importing them."""
    skip = set(exclude)
    folder = Path(package_file).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(folder)])
                  if not m.ispkg and not m.name.startswith("_") and m.name not in skip)
