"""The three environment files describe one environment; every task takes -P config."""
from __future__ import annotations

import tomllib

import yaml

from tests.helpers import REPO
from tracking.tasks import entry_points, load_task, task_names


def test_environment_files_agree():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    deps = set(pyproject["project"]["dependencies"])
    venv = set(yaml.safe_load((REPO / "python_env.yaml").read_text())["dependencies"])
    conda = yaml.safe_load((REPO / "conda.yaml").read_text())["dependencies"]
    pip = set(next(d["pip"] for d in conda if isinstance(d, dict)))
    assert deps == venv == pip
    assert {"mlflow[auth]==3.17.2", "torch==2.14.1", "torchvision==0.29.1"} <= deps  # [auth]: `labrun server`


def test_every_task_entry_point_loads_and_takes_config():
    eps = entry_points(REPO)
    for name in task_names(REPO):
        assert "config" in eps[name].parameters, name
        task = load_task(name, REPO)
        assert task.schema.task == name


def test_tracking_imports_none_of_the_layers_above_it():
    """docs/architecture.md: projects, sweeps and analysis depend on tracking, never the reverse."""
    import ast
    from pathlib import Path

    above = {"projects", "sweeps", "analysis", "labrun"}
    found = []
    for path in sorted((Path(__file__).resolve().parent.parent / "tracking").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in above]
    assert found == []
