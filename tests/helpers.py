"""Helpers for tests: list runs in a store, run a command in a real subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def all_runs(client, experiment_names=None):
    """Every run in the store (all experiments unless names are given)."""
    exps = client.search_experiments()
    ids = [e.experiment_id for e in exps if experiment_names is None or e.name in experiment_names]
    return client.search_runs(ids, max_results=10_000) if ids else []


def run_cli(args, *, env_extra=None, cwd=None, timeout=300, check=False):
    """Run a command in a real subprocess with the test's tracking env; returns CompletedProcess."""
    env = dict(os.environ)
    env.update(env_extra or {})
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    # `mlflow run --env-manager local` runs `python ...` from PATH: make it this interpreter.
    env["PATH"] = str(Path(PYTHON).parent) + os.pathsep + env.get("PATH", "")
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc
