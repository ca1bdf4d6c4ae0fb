"""Tasks are MLproject entry points; this reads them so nothing else has to hard-code one.

A task entry point runs ``python -m <module> ...``; the module defines ``Config`` (its
schema, a :class:`~tracking.config.TaskConfig`) and ``main(argv)``. Sweeps and the CLI find
tasks here by entry point name, so adding a task means adding an entry point, nothing more.
Any other MLflow project (a foreign one, swept through ``mlflow run``) is read here too, so
MLproject is parsed in one place: :func:`read_mlproject`.
"""
from __future__ import annotations

import difflib
import importlib
import json
import os
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

    def declared(self) -> dict[str, tuple[str, Any]]:
        """Parameter -> (MLflow type, default or None when required), as ``mlflow run`` reads them."""
        return {k: (p.get("type", "string"), p.get("default")) if isinstance(p, dict) else (str(p), None)
                for k, p in self.parameters.items()}


@dataclass
class Project:
    """An MLflow project as its MLproject file declares it."""

    work_dir: str
    name: str
    entry_points: dict[str, EntryPoint]

    def declared(self) -> tuple[str, str, dict[str, dict[str, tuple[str, Any]]]]:
        """``(work_dir, name, {entry: declared parameters})``: what MLflow's own loader gives
        (:func:`tracking.backends.read_project`), so either source reads the same."""
        return self.work_dir, self.name, {n: ep.declared() for n, ep in self.entry_points.items()}


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


def read_mlproject(folder: str | Path) -> Project:
    """The one reader of an MLproject file; ValueError (one line) when the folder has none."""
    folder = Path(folder)
    path = folder / "MLproject"
    if not path.is_file():
        raise ValueError(f"no MLproject file in {str(folder)!r} (a git URI needs MLflow's project loader)")
    doc = yaml.safe_load(path.read_text()) or {}
    eps = {name: EntryPoint(name, (spec or {}).get("command", ""), (spec or {}).get("parameters") or {})
           for name, spec in (doc.get("entry_points") or {}).items()}
    return Project(str(folder.resolve()), doc.get("name") or folder.name, eps)


def entry_points(root: str | Path | None = None) -> dict[str, EntryPoint]:
    """This checkout's entry points (the MLproject found from ``root`` upward)."""
    return read_mlproject(project_root(root)).entry_points


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


# ---------------------------------------------------------------------------- any MLflow project

@dataclass
class ProjectEntry:
    """An MLflow project's entry point as ``mlflow run`` sees it: where, and what it takes."""

    uri: str
    entry: str
    version: str | None
    work_dir: str
    name: str
    parameters: dict[str, tuple[str, Any]]
    """name -> (MLflow type, default or None when required)."""

    def check(self, params: dict[str, Any], where: str = "") -> dict[str, str]:
        """Every ``-P`` value checked before anything starts, as ``mlflow run`` would check it
        (later, one cell at a time); returns all parameters as text, defaults filled in."""
        declared = ", ".join(f"{k} ({t})" for k, (t, _) in self.parameters.items()) or "none"
        out: dict[str, str] = {}
        for key, value in params.items():
            if key not in self.parameters:
                close = difflib.get_close_matches(key, list(self.parameters), n=2)
                hint = f"did you mean: {', '.join(close)}? " if close else ""
                raise ConfigError(f"entry point {self.entry!r} of {self.uri} declares no parameter "
                                  f"{key!r}{where}; {hint}declared: {declared}")
            out[key] = _typed(key, value, self.parameters[key][0], self, where)
        for key, (_, default) in self.parameters.items():
            if key not in out:
                if default is None:
                    raise ConfigError(f"entry point {self.entry!r} of {self.uri} needs parameter "
                                      f"{key!r}{where} (it has no default); declared: {declared}")
                out[key] = str(default)
        return out


def _typed(key: str, value: Any, kind: str, ep: ProjectEntry, where: str) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    ok = True
    if kind == "float":
        ok = _parses(float, text)
    elif kind == "int":
        ok = _parses(int, text)
    elif kind == "path":
        ok = "://" in text or os.path.exists(os.path.join(ep.work_dir, text))
    elif kind == "uri":
        ok = bool(text)
    if not ok:
        raise ConfigError(f"parameter {key!r} of entry point {ep.entry!r}{where} expects {kind}, "
                          f"got {text!r}")
    return text


def _parses(kind: type, text: str) -> bool:
    try:
        kind(text)
        return True
    except ValueError:
        return False


def project_entry(uri: str, entry: str, version: str | None = None) -> ProjectEntry:
    """Read ``uri``'s MLproject with MLflow's own loader (a git URI is fetched as ``mlflow run``
    fetches it), else with :func:`read_mlproject`; a missing project or entry point is one
    line, exit 2."""
    from tracking import backends

    local = Path(uri).expanduser()
    target = str(local.resolve()) if local.exists() else uri
    try:
        work_dir, name, entries = backends.read_project(target, version)
    except Exception as exc:
        raise ConfigError(f"project {uri!r} cannot be read as an MLflow project: "
                          f"{str(exc).splitlines()[0]}") from None
    if entry not in entries:
        raise ConfigError(f"project {uri!r} has no entry point {entry!r}; entry points: "
                          f"{', '.join(entries) or 'none'}")
    params = entries[entry]
    return ProjectEntry(uri=target, entry=entry, version=version, work_dir=work_dir,
                        name=name, parameters=params)


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
