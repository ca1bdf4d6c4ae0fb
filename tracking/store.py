"""Where runs live: the tracking URI, the client, and reading a run's config back.

MLflow 3's own default (``sqlite:///mlflow.db`` in the working directory, artifacts in
``./mlruns``) is kept so that a bare ``mlflow ui`` opens the same runs labrun wrote.
"""
from __future__ import annotations

import contextlib
import os
import socket
import time
from typing import Any, Iterable

from tracking import env
from tracking import tags as T

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"

# MLflow 3's UI opens an experiment on its GenAI overview unless this tag says otherwise.
EXPERIMENT_KIND = "mlflow.experimentKind"
MODEL_DEVELOPMENT = "custom_model_development"
NOTE = "mlflow.note.content"  # the description the UI shows (runs and experiments alike)

def quiet_environment() -> None:
    """No telemetry, no wandb: labrun runs without network, and these phone home."""
    env.quiet()


def tracking_uri() -> str:
    return env.MLFLOW_TRACKING_URI.get() or DEFAULT_TRACKING_URI


def client():
    """An ``MlflowClient`` on :func:`tracking_uri` (imported lazily: mlflow is slow to import)."""
    quiet_environment()
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    # Building the client creates MLflow's tables in a fresh store; see _racing_first_use.
    with _first_use_lock(uri):
        return _racing_first_use(lambda: MlflowClient(tracking_uri=uri))


_REACHED: set[str] = set()


def check_reachable(uri: str) -> None:
    """A ConfigError within ``LABRUN_CONNECT_TIMEOUT_S`` when nothing answers at ``uri``.

    MLflow retries an unreachable server or database for many minutes and prints nothing, so
    a mistyped URI looked like a hang. Checked once per process and URI, before any run
    exists; a server that goes away later is MLflow's (and the metric journal's) business."""
    if uri in _REACHED:
        return
    reason = _unreachable(uri, env.LABRUN_CONNECT_TIMEOUT_S.get())
    if reason:
        from tracking.config import ConfigError

        fix = ("create the folder or fix MLFLOW_TRACKING_URI" if uri.startswith("sqlite:") else
               "start it (labrun server) or fix MLFLOW_TRACKING_URI")
        raise ConfigError(f"cannot reach the tracking store {_redacted(uri)}: {reason}; {fix}, or unset "
                          f"MLFLOW_TRACKING_URI to use ./mlflow.db")
    _REACHED.add(uri)


def _redacted(uri: str) -> str:
    """The URI without a password (``postgresql://user:secret@host``)."""
    import re

    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", uri)


def _unreachable(uri: str, timeout: float) -> str | None:
    scheme = uri.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        return _http_unreachable(uri, timeout)
    if scheme == "sqlite":
        path = uri[len("sqlite:///"):].split("?", 1)[0] if uri.startswith("sqlite:///") else ""
        folder = os.path.dirname(os.path.abspath(path)) if path and path != ":memory:" else ""
        return f"the folder {folder} does not exist" if folder and not os.path.isdir(folder) else None
    if "://" in uri and scheme != "file":  # postgresql, mysql, mssql: is anything listening?
        return _tcp_unreachable(uri, timeout)
    return None


def _http_unreachable(uri: str, timeout: float) -> str | None:
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):  # a server with logins: reachable, the login is checked later
            return None
        return f"it answers HTTP {exc.code} to /health, so it is not an MLflow tracking server (or one behind a broken proxy)"
    except (urllib.error.URLError, OSError) as exc:
        why = getattr(exc, "reason", exc)
        return f"no answer within {timeout:g} s" if isinstance(why, TimeoutError) else str(why)
    return None


def _tcp_unreachable(uri: str, timeout: float) -> str | None:
    from sqlalchemy.engine import make_url

    try:
        url = make_url(uri)
    except Exception as exc:
        return f"not a valid database URI ({exc})"
    if not url.host:  # a local socket: the driver will say
        return None
    port = url.port or {"postgresql": 5432, "mysql": 3306, "mssql": 1433}.get(url.get_backend_name())
    if port is None:
        return None
    try:
        socket.create_connection((url.host, port), timeout=timeout).close()
    except socket.timeout:
        return f"{url.host}:{port} did not answer within {timeout:g} s"
    except OSError as exc:
        return f"{url.host}:{port}: {exc.strerror or exc}"
    return None


@contextlib.contextmanager
def _first_use_lock(uri: str):
    """One process at a time builds a client on a local SQLite file: two that create its
    tables together can leave a half-done migration (``_alembic_tmp_*``) no retry repairs."""
    path = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else None
    if not path or path == ":memory:" or not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        yield
        return
    import fcntl
    import hashlib
    import tempfile

    # In the temp dir, not beside the database: a file there would make a repository dirty.
    key = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:16]
    try:
        fh = open(os.path.join(tempfile.gettempdir(), f"labrun-store-{key}.lock"), "a")
    except OSError:  # no usable temp dir: the retries in _racing_first_use are all there is
        yield
        return
    with fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _racing_first_use(fn):
    """Retry ``fn`` a few times before believing its error.

    On a fresh store MLflow creates its tables on first use, and processes starting
    together (sweep cells, optimize workers, two people's first runs) collide doing it.
    """
    for attempt in range(5):
        try:
            return fn()
        except Exception:
            if attempt == 4:
                raise
            time.sleep(1.0 + attempt)


def experiment_id(name: str, *, create: bool = True, description: str | None = None) -> str | None:
    """Id of the experiment called ``name``; created on first use (race-safe for workers).

    A created experiment gets the UI's model-training kind and ``description`` (or a line
    saying labrun made it), so clicking it in ``mlflow ui`` opens the runs table.
    """
    return _racing_first_use(lambda: _experiment_id(name, create, description))


def experiment_tags(name: str, description: str | None = None) -> dict[str, str]:
    return {EXPERIMENT_KIND: MODEL_DEVELOPMENT,
            NOTE: description or f"Runs of `{name}` recorded by labrun (tags labrun.*)."}


def mark_experiment(exp_id: str, description: str | None = None, c: Any = None) -> None:
    """An experiment labrun writes to but did not create (``Default``, one ``mlflow run``
    made) gets the model-training kind and a description where it has none; best effort."""
    try:
        c = c or client()
        exp = c.get_experiment(exp_id)
        for key, value in experiment_tags(exp.name, description).items():
            if key not in exp.tags:
                c.set_experiment_tag(exp_id, key, value)
    except Exception:
        pass


def _experiment_id(name: str, create: bool, description: str | None) -> str | None:
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        warn_foreign_artifacts(exp)
        if create:
            mark_experiment(exp.experiment_id, description, c)
        return exp.experiment_id
    if not create:
        return None
    from mlflow.exceptions import MlflowException

    try:
        return c.create_experiment(name, tags=experiment_tags(name, description))
    except MlflowException:
        # Another worker created it between our lookup and create.
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


# The links into the MLflow UI (model-training view, saved runs-table views): tracking/views.py.
MODEL_TRAINING_VIEW = "workflowType=machine_learning"


def ui_base() -> str:
    from tracking import views

    return views.ui_base()


def experiment_url(experiment_id: str) -> str:
    """The experiment's runs table (its saved view, when labrun wrote one)."""
    from tracking import views

    try:
        return views.experiment_link(client(), experiment_id)
    except Exception:
        return views.experiment_url(experiment_id)


def run_url(experiment_id: str, run_id: str) -> str:
    from tracking import views

    return views.run_url(experiment_id, run_id)


def check_experiment_env() -> None:
    """``MLFLOW_EXPERIMENT_ID`` left in a shell (``mlflow.set_experiment`` writes it) may name an
    experiment of another store; said in one line before a run is attempted, not as MLflow's
    traceback from inside ``create_run``."""
    from tracking.config import ConfigError

    exp_id = env.MLFLOW_EXPERIMENT_ID.get()
    if not exp_id or env.MLFLOW_RUN_ID.is_set() or env.MLFLOW_EXPERIMENT_NAME.is_set():
        return
    try:
        client().get_experiment(exp_id)
    except Exception:
        raise ConfigError(f"MLFLOW_EXPERIMENT_ID={exp_id} names no experiment in the tracking store "
                          f"{tracking_uri()}; unset it, or pass --experiment NAME") from None


def check_resumable(run_id: str, task: str) -> None:
    """``--resume RUN_ID`` names a run of this task in this store, or one line says what it is.

    Checked before the config is read, so another task's run is named as such rather than
    failing later on its config keys or its checkpoint."""
    from tracking.config import ConfigError
    from tracking.tags import TASK

    try:
        run = client().get_run(run_id)
    except Exception:
        raise ConfigError(f"cannot resume: no run {run_id!r} in the tracking store {tracking_uri()} "
                          f"(a run id is the 32 hex characters in the run's UI page and in 'labrun export')") from None
    other = run.data.tags.get(TASK)
    if other is None:
        raise ConfigError(f"cannot resume: run {run_id} is not a labrun task run (no {TASK} tag)")
    if other != task:
        raise ConfigError(f"cannot resume: run {run_id} is a run of task {other!r}, not {task!r} "
                          f"(labrun run {other} --resume {run_id})")


def resolved_config_of(run_id: str) -> dict[str, Any]:
    """The resolved config a run logged in ``config.yaml`` (for ``--resume``).

    Raises ConfigError with a one-line reason when the run or its config is missing.
    """
    import tempfile

    import yaml

    from tracking.config import ConfigError

    c = client()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = c.download_artifacts(run_id, "config.yaml", tmp)
        except Exception:
            raise ConfigError(
                f"cannot resume: run {run_id!r} has no config.yaml artifact (not a labrun run?)"
            ) from None
        with open(path) as fh:
            doc = yaml.safe_load(fh)
    if not isinstance(doc, dict) or "config" not in doc:
        raise ConfigError(f"cannot resume: config.yaml of run {run_id!r} has no 'config' section")
    return doc["config"]


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs; a killed process its parent has not reaped yet (a zombie) is dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True  # no /proc (macOS): kill(0) is all we know


def mark_stale_killed(client: Any, run_id: str) -> None:
    """A dead RUNNING run would read as running forever in the UI and in analysis
    (:func:`tracking.runs.close_stale`, kept here for the callers that know this name)."""
    from tracking.runs import close_stale

    close_stale(client, run_id)


def close_if_stale(client: Any, run_id: str, *, grace_s: float = 300.0) -> bool:
    """End a RUNNING run nobody runs any more as KILLED (with the reason); True if it was."""
    try:
        run = client.get_run(run_id)
        if not is_stale(run.info.status, run.data.tags, run.info.start_time, grace_s=grace_s):
            return False
        mark_stale_killed(client, run_id)
        return True
    except Exception:
        return False


def is_stale(status: str, tags: dict[str, str], start_time_ms: int | None,
             *, grace_s: float = 300.0) -> bool:
    """A RUNNING run nobody is running any more (crashed launcher, SIGKILL, bad ``mlflow run``).

    On this host the recorded pid decides. Elsewhere the ``labrun.heartbeat`` tag (refreshed
    every 30 s by a live run) decides after ``grace_s``; a run with neither (``mlflow run``
    created it but its command never started) is judged by its age.
    """
    if status != "RUNNING":
        return False
    host, pid = tags.get(T.HOST), tags.get(T.PID)
    if pid and host == socket.gethostname():
        try:
            return not process_alive(int(pid))
        except ValueError:
            return True
    beat = tags.get(T.HEARTBEAT)
    if beat:
        try:
            return (time.time() - float(beat)) > grace_s
        except ValueError:
            pass
    if start_time_ms is None:
        return True
    return (time.time() - start_time_ms / 1000.0) > grace_s


_WARNED: set[str] = set()


def warn_foreign_artifacts(exp: Any) -> None:
    """One warning when a local store's experiment keeps its artifacts in another folder's
    tree: a store copied elsewhere keeps the absolute ``<old>/mlruns/<id>`` locations of its
    experiments, and new runs would quietly write into the original tree (or fail there)."""
    uri = tracking_uri()
    location = str(getattr(exp, "artifact_location", "") or "")
    if not uri.startswith("sqlite:///") or exp.experiment_id in _WARNED:
        return
    path = location[len("file://"):] if location.startswith("file://") else location
    if "://" in path or not os.path.isabs(path):
        return
    home = os.path.dirname(os.path.abspath(uri[len("sqlite:///"):].split("?", 1)[0]))
    if os.path.abspath(path).startswith(home + os.sep) or os.path.exists(path):
        return
    _WARNED.add(exp.experiment_id)
    import logging

    logging.getLogger("labrun").warning(
        "labrun: experiment %r keeps its artifacts in %s, which does not exist and is outside this "
        "store's folder %s: was the store copied or moved? New runs would write there. See README, "
        "'Where runs go', to point the experiment at its new folder", exp.name, path, home)


def elect_earliest(runs: Iterable[tuple[int | None, str]]) -> str | None:
    """Of runs racing for one piece of work, as ``(start_time_ms, run_id)``: the one that holds it.

    The store has no compare-and-set, so racers each create their run, read all of them back
    and keep the earliest (ties: the smaller run id). Every racer that reads the same runs
    elects the same one, and a run created after another racer's read starts later, as long
    as clocks differ by less than the wait before that read. ``None`` when there is none.
    """
    return min(runs, key=lambda r: (r[0] or 0, r[1]), default=(None, None))[1]
