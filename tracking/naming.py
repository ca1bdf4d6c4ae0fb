"""Readable run names: ``<task>-<method>-s<seed>``, and a resumed run keeps its source's name.

MLflow names an unnamed run ``classy-wolf-669``; in a table of sixty seeds and methods
that says nothing, while the task, method and seed are what a reader scans for.
"""
from __future__ import annotations

import re
from typing import Any

_RESUMED = re.compile(r"^(?P<base>.+)-r(?P<n>\d+)$")


def default_name(cfg: Any) -> str:
    name = f"{cfg.task}-{cfg.method_tag}-s{cfg.seed}"
    if getattr(cfg, "condition", "default") not in ("default", "", None):
        name = f"{cfg.task}-{cfg.method_tag}-{cfg.condition}-s{cfg.seed}"
    return name


def resumed_name(source_name: str) -> str:
    """``ired-adversarial-s3`` -> ``ired-adversarial-s3-r1``; ``...-r1`` -> ``...-r2``."""
    m = _RESUMED.match(source_name)
    if m:
        return f"{m['base']}-r{int(m['n']) + 1}"
    return f"{source_name}-r1"


def run_name(client: Any, cfg: Any) -> str:
    """The name a run gets when nobody chose one."""
    source = getattr(cfg.launch, "resume", None)
    if source:
        try:
            old = client.get_run(source).info.run_name
        except Exception:
            old = None
        return resumed_name(old if old and not is_generated(old) else default_name(cfg))
    return default_name(cfg)


def is_generated(name: str | None) -> bool:
    """True for a name MLflow made up (``adjective-noun-NNN`` from its own word lists)."""
    if not name:
        return True
    parts = name.split("-")
    if len(parts) != 3 or not parts[2].isdigit():
        return False
    from tracking import backends

    return backends.is_mlflow_word_pair(parts[0], parts[1])
