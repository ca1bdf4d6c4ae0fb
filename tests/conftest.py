"""Shared fixtures: a real MLflow SQLite store in a temp dir, never the developer's own."""
from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import pytest

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("LABRUN_PROGRESS", "0")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("LABRUN_CLAIM_SETTLE_S", "0.05")  # one machine, one clock: no skew to wait out


def pytest_configure(config):
    """Tests press Ctrl-C on runs, sweeps and the checkpoint writer. A shell that starts pytest
    in the background (``make test &``, ``nohup ... &``) leaves SIGINT ignored, and Python then
    installs no KeyboardInterrupt handler, neither here nor in the processes the tests start
    (an ignored signal survives exec). Put the handler back, so that those tests test labrun
    and not the shell (one hung for 10 minutes in a CI clone started with ``&``)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


RUN_CONTEXT = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "LABRUN_PARENT_RUN_ID")


@pytest.fixture(autouse=True)
def _no_leaked_run_context():
    """``mlflow.set_experiment`` (and ``mlflow run``'s helpers) write MLFLOW_EXPERIMENT_ID into
    this process's environment; left there, the next test's subprocess started in a fresh
    store looked for experiment 1 ("No Experiment with id=1 exists"), depending on which tests
    an xdist worker ran before it. Each test leaves the run context as it found it."""
    before = {k: os.environ.get(k) for k in RUN_CONTEXT}
    yield
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def _template_db(tmp_path_factory):
    """A migrated, empty MLflow database: creating one costs seconds of migrations, a copy none."""
    from mlflow.tracking import MlflowClient

    folder = tmp_path_factory.mktemp("template")
    uri = f"sqlite:///{folder}/mlflow.db"
    MlflowClient(tracking_uri=uri).search_experiments()
    return folder / "mlflow.db"


@pytest.fixture
def store(tmp_path, monkeypatch, _template_db):
    """A fresh tracking store: ``sqlite:///<tmp>/mlflow.db`` with artifacts in ``<tmp>/mlruns``.

    The cwd moves to the temp dir because MLflow resolves the default artifact root
    (``./mlruns``) against it. Yields an ``MlflowClient``; ``store.uri`` is the URI.
    """
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "mlflow.db"
    shutil.copyfile(_template_db, db)
    with sqlite3.connect(db) as con:  # the Default experiment's artifacts belong here too
        con.execute("update experiments set artifact_location = ? where experiment_id = 0",
                    (str(tmp_path / "mlruns" / "0"),))
    uri = f"sqlite:///{db}"
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




@pytest.fixture
def fast_paths_on(monkeypatch):
    """The fast paths allowed and nothing logged about them yet (tests of tracking.backends
    and of what uses them): ``pytestmark = pytest.mark.usefixtures("fast_paths_on")``."""
    from tracking import backends

    monkeypatch.delenv("LABRUN_PUBLIC_API_ONLY", raising=False)
    backends.reset()
    yield
    backends.reset()
