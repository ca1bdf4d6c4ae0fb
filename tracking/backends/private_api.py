"""Private MLflow and Optuna API, each use with its public fallback: a run's latest metrics
with steps, deleting a pruned checkpoint, an MLflow project's entry points, MLflow's run-name
words, a dataset as another run's input, and an Optuna trial's storage id."""
from __future__ import annotations

from typing import Any

from tracking.backends import _optuna_storages, announce_fallback, describe_error, fast_path_available, log


def _optuna_storage(storage: Any) -> Any:
    if not isinstance(storage, str):
        return storage
    if storage not in _optuna_storages:
        import optuna

        _optuna_storages[storage] = optuna.storages.RDBStorage(storage)
    return _optuna_storages[storage]


def trial_id(trial: Any, *, storage: Any, study_name: str | None = None) -> int:
    """The storage's id of ``trial`` (what ``optuna.trial.Trial(study, trial_id)`` takes).

    Optuna exposes only ``trial.number`` publicly (``Trial.trial_id`` was removed in 2.0);
    the id is ``trial._trial_id``. The public fallback asks the storage (``storage``: an
    RDB URL or a ``BaseStorage``) by study name and trial number: two small queries.
    """
    if fast_path_available("trial_id"):
        value = getattr(trial, "_trial_id", None)
        if isinstance(value, int):
            return value
        announce_fallback("trial_id", f"{type(trial).__name__} has no integer _trial_id")
    st = _optuna_storage(storage)
    study_id = st.get_study_id_from_name(study_name if study_name is not None else trial.study.study_name)
    return int(st.get_trial_id_from_study_id_trial_number(study_id, trial.number))


def latest_metrics(client: Any, run: Any) -> list[tuple[str, float, int]]:
    """``(key, value, step)`` of a run's latest values, as MLflow's ``latest_metrics`` holds
    them. The public ``run.data.metrics`` has no steps: the fallback reads each history
    (one call per metric) and takes MLflow's own order, the largest (step, timestamp, value)."""
    objs = getattr(run.data, "_metric_objs", None) if fast_path_available("latest") else None
    if objs is not None:
        return [(m.key, m.value, m.step) for m in objs]
    if fast_path_available("latest"):
        announce_fallback("latest", "RunData has no _metric_objs")
    out = []
    for key in run.data.metrics:
        history = client.get_metric_history(run.info.run_id, key)
        last = max(history, key=lambda m: (m.step, m.timestamp, m.value))
        out.append((key, last.value, last.step))
    return out


def delete_artifact(artifact_uri: str, path: str, _repos: dict[str, Any] = {}) -> bool:
    """Delete ``path`` under a run's artifact root; False where the store cannot (or the
    internal registry moved): the caller keeps the file. One repository per root is cached."""
    if not fast_path_available("delete"):
        return False
    try:
        if artifact_uri not in _repos:
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            _repos[artifact_uri] = get_artifact_repository(artifact_uri)
        _repos[artifact_uri].delete_artifacts(path)
        return True
    except ImportError as exc:
        return announce_fallback("delete", describe_error(exc))
    except Exception as exc:  # a store that cannot delete (e.g. some object stores)
        log.debug("could not delete artifact %s under %s: %s", path, artifact_uri, exc)
        return False


def read_project(uri: str, version: str | None = None) -> tuple[str, str, dict[str, dict[str, tuple[str, Any]]]]:
    """``(work_dir, name, {entry: {parameter: (type, default)}})`` of an MLflow project.

    MLflow's own loader also fetches a git URI the way ``mlflow run`` does; without it only a
    local folder can be read (its MLproject, MLflow's documented YAML). Raises ValueError
    with a one-line reason.
    """
    from pathlib import Path

    if fast_path_available("project"):
        try:
            from mlflow.projects import _project_spec
            from mlflow.projects.utils import _fetch_project
        except ImportError as exc:
            announce_fallback("project", describe_error(exc))
        else:
            work_dir = _fetch_project(uri=uri, version=version)
            project = _project_spec.load_project(work_dir)
            entries = {name: {k: (p.type, p.default) for k, p in ep.parameters.items()}
                       for name, ep in (project._entry_points or {}).items()}
            return work_dir, project.name or Path(work_dir).name, entries
    return _read_project_yaml(Path(uri))


def _read_project_yaml(folder: Any) -> tuple[str, str, dict[str, dict[str, tuple[str, Any]]]]:
    from tracking.tasks import read_mlproject  # the one reader of MLproject files

    return read_mlproject(folder).declared()


def is_mlflow_word_pair(first: str, second: str) -> bool:
    """Whether ``first-second`` come from the word lists MLflow draws run names from; where
    those lists are not to be had, every ``word-word`` pair counts (the shape was checked)."""
    if fast_path_available("run_names"):
        try:
            from mlflow.utils import name_utils as nu

            preds = {w.lower() for w in nu._GENERATOR_PREDICATES}
            nouns = {w.lower() for w in nu._GENERATOR_NOUNS}
        except (ImportError, AttributeError) as exc:
            announce_fallback("run_names", describe_error(exc))
        else:
            return first in preds and second in nouns
    return first.isalpha() and second.isalpha()


def dataset_entity(dataset: Any) -> Any:
    """The ``mlflow.entities.Dataset`` of an ``mlflow.data`` dataset, for ``log_inputs`` on a
    run other than the active one; ValueError where MLflow's private conversion is off."""
    if fast_path_available("dataset_entity") and hasattr(dataset, "_to_mlflow_entity"):
        return dataset._to_mlflow_entity()
    raise ValueError("logging a dataset to a run that is not the active MLflow run needs "
                     "MLflow 3.17's Dataset._to_mlflow_entity; start the run with mlflow.start_run")
