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


# ------------------------------------------------------------------------------ sweep cells

MAX_NAME = 32  # what the runs table shows before it cuts a name


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:g}"
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", str(v)).strip("_") or "x"


def _cut(text: str, n: int | None) -> str:
    return text if n is None or len(text) <= n else text[:n]


def short_names(values: list[dict[str, Any]], prefix: str = "", limit: int = MAX_NAME) -> list[str]:
    """Unique, readable run names of at most ``limit`` characters for the cells of one sweep,
    from the values that vary between them (constants say nothing): ``ired-adv-s3``.

    The prefix (the task) goes first while it fits; long words are cut to the shortest
    prefix that still tells them apart; a hash suffix is the last resort."""
    import hashlib

    keys: list[str] = []
    for v in values:
        keys += [k for k in v if k not in keys]
    varying = [k for k in keys if len({_value(v.get(k, "")) for v in values}) > 1]
    seed_last = [k for k in varying if k != "seed"] + (["seed"] if "seed" in varying else [])

    def width(k: str, n: int | None) -> int | None:
        """``n``, or more where ``n`` characters no longer tell this key's values apart."""
        full = {_value(v[k]) for v in values if k in v}
        if n is None:
            return None
        for m in range(n, max((len(x) for x in full), default=0) + 1):
            if len({_cut(x, m) for x in full}) == len(full):
                return m
        return None

    for n in (None, 12, 8, 6, 4, 3):
        widths = {k: width(k, n) for k in seed_last}

        def bits(v: dict[str, Any]) -> list[str]:
            return [f"s{v[k]}" if k == "seed" else _cut(_value(v[k]), widths[k])
                    for k in seed_last if k in v]

        for pre in ([prefix] if prefix else []) + [""]:
            names = ["-".join(x for x in [pre, *bits(v)] if x) or (prefix or "run") for v in values]
            if all(len(x) <= limit for x in names) and len(set(names)) == len(names):
                return names
    out = []
    for v in values:
        full = "-".join([prefix, *(_value(v[k]) for k in seed_last if k in v)])
        h = hashlib.sha1(full.encode()).hexdigest()[:5]
        out.append(f"{full[:limit - 6]}-{h}")
    return out
