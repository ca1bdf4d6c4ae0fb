"""Datasets as MLflow 3 run inputs: name, source, digest and split, shown in the run page.

The digest is MLflow's hash of the data itself, so two runs that claim the same data but
were fed different arrays (another seed of a generator, an edited CSV) say so.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

CONTEXT_TAG = "mlflow.data.context"  # the split: training, validation, test...


def _numpy(value: Any) -> Any:
    """torch tensors (any device) and lists become numpy arrays; numpy and pandas pass."""
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    if isinstance(value, Mapping):
        return {k: _numpy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        import numpy as np

        return np.asarray(value)
    return value


def _source(source: str | None, code: str) -> Any:
    """A path or URI stays one (MLflow resolves it); anything else names the code that made it."""
    from mlflow.data.code_dataset_source import CodeDatasetSource

    if source and ("://" in source or Path(source).exists()):
        return source
    return CodeDatasetSource({"mlflow.source.name": source or code})


def make_dataset(features: Any, *, name: str, targets: Any = None, source: str | None = None,
                 code: str = "labrun") -> Any:
    """An ``mlflow.data`` dataset from numpy / torch / pandas data (pandas: ``targets`` is a
    column name)."""
    import mlflow.data

    features = _numpy(features)
    src = _source(source, code)
    if type(features).__name__ == "DataFrame":
        return mlflow.data.from_pandas(features, source=src, targets=targets, name=name)
    return mlflow.data.from_numpy(features, source=src, targets=_numpy(targets), name=name)


def log_dataset(client: Any, run_id: str, dataset: Any, split: str) -> str:
    """Attach ``dataset`` to the run as an input with its split; returns its digest."""
    import mlflow

    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:  # the usual case: the public call
        _racing(lambda: mlflow.log_input(dataset, context=split))
        return dataset.digest
    from mlflow.entities import DatasetInput, InputTag

    from tracking import backends

    entity = backends.dataset_entity(dataset)  # a run that is not the active one: the client's path
    _racing(lambda: client.log_inputs(run_id, datasets=[DatasetInput(entity, tags=[InputTag(CONTEXT_TAG, split)])]))
    return dataset.digest


def _racing(log: Any) -> None:
    """Two runs that log the same dataset at the same moment both insert it; the store's
    unique key (experiment, name, digest) refuses the second, which then finds it there."""
    for attempt in range(3):
        try:
            log()
            return
        except Exception as exc:
            if "UNIQUE constraint" not in str(exc) and "duplicate key" not in str(exc) or attempt == 2:
                raise
            import time

            time.sleep(0.2 * (attempt + 1))
