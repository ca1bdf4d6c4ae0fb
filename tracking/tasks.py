"""Tasks are MLproject entry points; this reads them so nothing else has to hard-code one.

A task entry point runs ``python -m <module> ...``; the module defines ``Config`` (its
schema, a :class:`~tracking.config.TaskConfig`) and ``main(argv)``. Sweeps and the CLI find
tasks here by entry point name, so adding a task means adding an entry point, nothing more.
"""
from __future__ import annotations

import importlib
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from tracking.config import ConfigError
from tracking.exits import EXIT_FAILED, EXIT_FINISHED, EXIT_SIGINT


@dataclass
class EntryPoint:
    name: str
    command: str
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def module(self) -> str | None:
        """``python -m projects.ired.train ...`` -> ``projects.ired.train``."""
        words = shlex.split(re.sub(r"\{[^}]*\}", "X", self.command))
        if "-m" in words and words.index("-m") + 1 < len(words):
            return words[words.index("-m") + 1]
        return None


@dataclass
class Task:
    name: str
    module: str
    schema: type
    main: Callable[..., Any]


def project_root(start: str | Path | None = None) -> Path:
    """The folder holding MLproject: from ``start`` (or the cwd) upward, else this checkout."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "MLproject").exists():
            return folder
    return Path(__file__).resolve().parent.parent


def entry_points(root: str | Path | None = None) -> dict[str, EntryPoint]:
    path = project_root(root) / "MLproject"
    doc = yaml.safe_load(path.read_text()) or {}
    out = {}
    for name, spec in (doc.get("entry_points") or {}).items():
        out[name] = EntryPoint(name, spec.get("command", ""), spec.get("parameters") or {})
    return out


def load_task(name: str, root: str | Path | None = None) -> Task:
    eps = entry_points(root)
    if name not in eps:
        tasks = [n for n, ep in eps.items() if _is_task(ep)]
        raise ConfigError(f"unknown task {name!r}; tasks in MLproject: {', '.join(sorted(tasks))}")
    ep = eps[name]
    if ep.module is None:
        raise ConfigError(f"entry point {name!r} does not run 'python -m <module>'; cannot load it")
    mod = importlib.import_module(ep.module)
    schema, main = getattr(mod, "Config", None), getattr(mod, "main", None)
    if schema is None or main is None:
        raise ConfigError(f"entry point {name!r} ({ep.module}) must define Config and main(argv)")
    return Task(name, ep.module, schema, main)


def _is_task(ep: EntryPoint) -> bool:
    return bool(ep.module and ep.module.startswith("projects."))


def task_names(root: str | Path | None = None) -> list[str]:
    return sorted(n for n, ep in entry_points(root).items() if _is_task(ep))


def run_entry_point(main: str | Callable[[list[str]], Any], argv: list[str]) -> int:
    """Run a task's ``main(argv)`` in this process; return the code ``python -m`` would exit with.

    Launchers that run a cell inside a process of their own (a forked worker, a cluster job)
    read its outcome from this code alone (``tracking.exits``), so every way a task can end
    maps to one here, the same for all of them. ``main`` is a module name (imported here, with
    ``sys.argv`` set as ``python -m`` would) or the function itself.
    """
    try:
        if isinstance(main, str):
            sys.argv = [main, *argv]
            main = importlib.import_module(main).main
        main(argv)
    except SystemExit as exc:
        return _system_exit_code(exc.code)
    except KeyboardInterrupt:
        return EXIT_SIGINT
    except BaseException:  # a crash or an import error: the trace goes to the cell's log
        import traceback

        traceback.print_exc()
        return EXIT_FAILED
    return EXIT_FINISHED


def _system_exit_code(code: object) -> int:
    """What the interpreter makes of ``SystemExit(code)``: None is 0, a message is printed and 1."""
    if code is None:
        return EXIT_FINISHED
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return EXIT_FAILED
