"""Shared fixtures: a real MLflow SQLite store in a temp dir, never the developer's own."""
from __future__ import annotations

import os
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("LABRUN_PROGRESS", "0")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh tracking store: ``sqlite:///<tmp>/mlflow.db`` with artifacts in ``<tmp>/mlruns``.

    The cwd moves to the temp dir because MLflow resolves the default artifact root
    (``./mlruns``) against it. Yields an ``MlflowClient``; ``store.uri`` is the URI.
    """
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID",
                "LABRUN_PARENT_RUN_ID", "LABRUN_OBSERVERS"):
        monkeypatch.delenv(var, raising=False)
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(uri)
    client = MlflowClient(tracking_uri=uri)
    client.uri = uri
    client.root = tmp_path
    yield client
    while mlflow.active_run() is not None:
        mlflow.end_run()


