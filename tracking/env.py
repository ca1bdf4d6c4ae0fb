"""Environment variables labrun reads or sets, as typed objects (MLflow's ``environment_variables`` model).

One definition per variable: its name, type and default live here, so the sites that read,
set or strip it cannot drift apart (``MLFLOW_RUN_ID`` used to be handled three ways).
"""
from __future__ import annotations

import os
from typing import Generic, Mapping, MutableMapping, TypeVar

T = TypeVar("T")


class EnvironmentVariable(Generic[T]):
    def __init__(self, name: str, type_: type, default: T | None = None, doc: str = "") -> None:
        self.name = name
        self.type = type_
        self.default = default
        self.__doc__ = doc

    def is_set(self, environ: Mapping[str, str] | None = None) -> bool:
        return bool((os.environ if environ is None else environ).get(self.name))

    def get(self, environ: Mapping[str, str] | None = None) -> T | None:
        raw = (os.environ if environ is None else environ).get(self.name)
        if raw is None or raw == "":
            return self.default
        if self.type is bool:
            return raw.strip().lower() in ("1", "true", "yes", "on")  # type: ignore[return-value]
        return self.type(raw)

    def set(self, value: T, environ: MutableMapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        env[self.name] = str(value).lower() if isinstance(value, bool) else str(value)

    def unset(self, environ: MutableMapping[str, str] | None = None) -> None:
        (os.environ if environ is None else environ).pop(self.name, None)

    def __repr__(self) -> str:
        return f"EnvironmentVariable({self.name!r})"


# --- MLflow's, read or stripped by labrun ---------------------------------------------------
MLFLOW_TRACKING_URI = EnvironmentVariable("MLFLOW_TRACKING_URI", str)
MLFLOW_RUN_ID = EnvironmentVariable(
    "MLFLOW_RUN_ID", str,
    doc="Set by `mlflow run` (and labrun's launchers) for the run a task must adopt. A launcher "
        "strips it from a child's environment: the child creates or adopts its own run.")
MLFLOW_EXPERIMENT_ID = EnvironmentVariable("MLFLOW_EXPERIMENT_ID", str)
MLFLOW_EXPERIMENT_NAME = EnvironmentVariable("MLFLOW_EXPERIMENT_NAME", str)
MLFLOW_ARTIFACT_ROOT = EnvironmentVariable(
    "MLFLOW_ARTIFACT_ROOT", str, doc="An artifact root inside the repository: never counts as a dirty tree.")
MLFLOW_TRACKING_USERNAME = EnvironmentVariable(
    "MLFLOW_TRACKING_USERNAME", str, doc="The login on a tracking server with logins (`labrun server`).")
MLFLOW_TRACKING_PASSWORD = EnvironmentVariable("MLFLOW_TRACKING_PASSWORD", str,
                                               doc="That login's password.")

# --- labrun's own ---------------------------------------------------------------------------
LABRUN_PARENT_RUN_ID = EnvironmentVariable("LABRUN_PARENT_RUN_ID", str,
                                           doc="Nest the task's run under this one (sweep cells).")
LABRUN_ADMIN_PASSWORD = EnvironmentVariable(
    "LABRUN_ADMIN_PASSWORD", str,
    doc="The admin password `labrun server` creates the admin user with (or --admin-password-file); "
        "no default: the server refuses to start without one.")
LABRUN_CLAIM_SETTLE_S = EnvironmentVariable(
    "LABRUN_CLAIM_SETTLE_S", float, 0.5,
    doc="Seconds a sweep worker waits between creating its claim on a cell and reading the "
        "others' (sweeps/claims.py); must exceed the clock skew between the workers' machines.")
LABRUN_OBSERVERS = EnvironmentVariable("LABRUN_OBSERVERS", str, "",
                                       doc="Comma-separated module:attribute run-observer factories.")
LABRUN_PROGRESS = EnvironmentVariable("LABRUN_PROGRESS", bool, True,
                                      doc="0 turns progress bars off (CI, logs).")
LABRUN_UI_URL = EnvironmentVariable(
    "LABRUN_UI_URL", str, doc="Where the MLflow UI is served, for the links labrun prints "
                              "(default: the tracking server, else http://127.0.0.1:5000).")
LABRUN_JOURNAL_DIR = EnvironmentVariable(
    "LABRUN_JOURNAL_DIR", str,
    doc="Folder of the metric journals that survive a SIGKILL (default <tmp>/labrun-journal).")
LABRUN_CONNECT_TIMEOUT_S = EnvironmentVariable(
    "LABRUN_CONNECT_TIMEOUT_S", float, 5.0,
    doc="Seconds labrun waits for a tracking server or database to answer before it says, in one "
        "line, that the URI cannot be reached (MLflow itself would retry for many minutes).")
LABRUN_OPTUNA_STORAGE = EnvironmentVariable("LABRUN_OPTUNA_STORAGE", str)
LABRUN_OPTUNA_STUDY = EnvironmentVariable("LABRUN_OPTUNA_STUDY", str)
LABRUN_OPTUNA_TRIAL_ID = EnvironmentVariable("LABRUN_OPTUNA_TRIAL_ID", int)
LABRUN_OPTUNA_METRIC = EnvironmentVariable("LABRUN_OPTUNA_METRIC", str)
LABRUN_OPTUNA_PRUNER = EnvironmentVariable("LABRUN_OPTUNA_PRUNER", str)
LABRUN_TRUST_CHECKPOINTS = EnvironmentVariable(
    "LABRUN_TRUST_CHECKPOINTS", bool, False,
    doc="1 loads checkpoints without the allow-list of globals (tracking/checkpoint/allowlist.py): only for "
        "files you made yourself; loading another's file this way may run their code. Never on by default.")
LABRUN_PUBLIC_API_ONLY = EnvironmentVariable(
    "LABRUN_PUBLIC_API_ONLY", bool, False,
    doc="1 turns off every fast path below MLflow's/Optuna's public API (SQL on MLflow's tables, "
        "Optuna's Trial._trial_id; see tracking/backends/): the public calls are used instead.")

# Variables only a launcher may set for one process: never inherited by a child.
LAUNCHER_ONLY = (MLFLOW_RUN_ID,)

# No telemetry, no wandb: labrun runs without network, and these phone home.
QUIET = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "WANDB_MODE": "disabled",
    "GIT_PYTHON_REFRESH": "quiet",
    # MLflow's download bars redraw with carriage returns around labrun's own lines
    # (``--resume``, ``labrun reproduce``/``diff`` read artifacts): the one line after says enough.
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


def quiet(environ: MutableMapping[str, str] | None = None) -> MutableMapping[str, str]:
    """Set :data:`QUIET` where not already set (in ``os.environ`` or a child's env); returns it."""
    env = os.environ if environ is None else environ
    for key, value in QUIET.items():
        env.setdefault(key, value)
    return env


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a task process a launcher starts: quiet, no inherited run id."""
    env = dict(os.environ)
    for var in LAUNCHER_ONLY:
        var.unset(env)
    quiet(env)
    env.update(extra or {})
    return env
