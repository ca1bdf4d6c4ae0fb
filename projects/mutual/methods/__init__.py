"""Mutual-learning methods: one small class per method behind :class:`MutualMethod`.

A method is a module in this folder, named for the method with ``-`` spelled ``_``
(``ssmo-hard`` lives in ``ssmo_hard.py``), that defines one :class:`MutualMethod`
subclass whose ``name`` is the method's name. Adding a method is adding that one file: the
registry finds the module by its file name (so the config schema validates
``method.name`` without importing torch) and imports it only when the method is built.
Shared helpers belong in ``base.py`` or in a module whose name starts with ``_``.

    from projects.mutual.methods import build_method
    method = build_method(cfg.method)          # or get_method("ssmo-soft")(lam=1.0, k=10)
    losses = method(loss_a, loss_b, out_a, out_b, task.divergence, epoch=epoch)
    (losses.a.total + losses.b.total).backward()
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from projects.mutual.registry import module_names, unknown

if TYPE_CHECKING:  # pragma: no cover
    from projects.mutual.methods.base import MethodLosses, MutualMethod, PeerLosses

_INFRASTRUCTURE = ("base",)
_LAZY = {"MutualMethod": "base", "PeerLosses": "base", "MethodLosses": "base"}


def method_names() -> tuple[str, ...]:
    """Every method in this folder, by name (no module is imported)."""
    return tuple(m.replace("_", "-") for m in module_names(__file__, _INFRASTRUCTURE))


def check_method_name(name: str) -> str:
    if name not in method_names():
        raise unknown("method", name, method_names())
    return name


def get_method(name: str) -> "type[MutualMethod]":
    """The class of method ``name``; an unknown name is one line listing the valid ones."""
    check_method_name(name)
    from projects.mutual.methods.base import MutualMethod

    module = importlib.import_module(f"{__name__}.{name.replace('-', '_')}")
    for value in vars(module).values():
        if (isinstance(value, type) and issubclass(value, MutualMethod)
                and value.__module__ == module.__name__ and getattr(value, "name", None) == name):
            return value
    raise TypeError(f"{module.__name__} defines no MutualMethod subclass with name = {name!r}")


def build_method(config: Any = None, /, **params: Any) -> "MutualMethod":
    """A method from a ``method`` config section (or a name and keyword parameters).

    ``build_method(cfg.method)``; ``build_method("ssmo-soft", lam=0.5, k=20)``.
    """
    if config is None or isinstance(config, str):
        return get_method(config or "independent")(**params)
    values = {key: getattr(config, key) for key in ("lam", "k", "warmup", "ramp", "warmup_unit")}
    values.update(params)
    return get_method(config.name)(**values)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
