"""Synthetic stores of many runs, written straight into MLflow's tables.

Tests of paging (> 1,000 runs) and the scale benchmark (10,000-50,000 runs) need stores
far larger than a test can afford to create through the client one run at a time
(~10 ms a run). The experiment is created through ``MlflowClient`` (which also creates and
migrates the schema); runs, tags, params, latest metrics and histories are then inserted
in bulk, laid out exactly as MLflow writes them, so both ``search_runs`` and labrun's SQL
reader see ordinary runs. Only for building test and benchmark stores.
"""
from __future__ import annotations

import hashlib
import time
import uuid
from typing import Sequence

import numpy as np

from tracking import tags as T

TASK = "synthetic"


def _h(*parts: object) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:16]


def metric_names(n: int) -> list[str]:
    """``metric.m00.val`` ..., with ``metric.acc`` (maximised) second when n > 1."""
    names = ["metric.m00.val"] + (["metric.acc"] if n > 1 else [])
    return names + [f"metric.m{j:02d}.val" for j in range(2, n)]


def build_store(uri: str, experiment: str, n_runs: int, *, n_metrics: int = 10, n_params: int = 20,
                steps: int = 1, methods: Sequence[str] = ("a", "b", "c", "d"), seeds: int = 5,
                conditions: Sequence[str] = ("default",), failed_every: int = 0, seed: int = 0,
                chunk: int = 5000) -> str:
    """Insert ``n_runs`` FINISHED runs (every ``failed_every``-th FAILED); returns the experiment id.

    Run i has method ``methods[i % M]``, seed ``(i // M) % seeds`` and cell ``i // (M * seeds)``
    (param ``train.cell``): every group (method, cell) has ``seeds`` runs; the cell's condition
    is ``conditions[cell % len(conditions)]``. Metric values are
    ``method index + 0.1 * noise`` per step, so methods rank consistently across seeds.
    """
    import sqlalchemy
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(experiment)
    artifact_root = (exp or client.get_experiment(exp_id)).artifact_location
    rng = np.random.default_rng(seed)
    names = metric_names(n_metrics)
    now = int(time.time() * 1000) - n_runs * 10
    engine = sqlalchemy.create_engine(uri)
    ins = {t: sqlalchemy.text(f"INSERT INTO {t} ({', '.join(c)}) VALUES ({', '.join(':' + x for x in c)})")
           for t, c in {
               "runs": ["run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id",
                        "status", "start_time", "end_time", "source_version", "lifecycle_stage",
                        "artifact_uri", "experiment_id"],
               "tags": ["key", "value", "run_uuid"],
               "params": ["key", "value", "run_uuid"],
               "metrics": ["key", "value", "timestamp", "run_uuid", "step", "is_nan"],
               "latest_metrics": ["key", "value", "timestamp", "step", "is_nan", "run_uuid"],
           }.items()}
    m = len(methods)
    with engine.begin() as conn:
        for lo in range(0, n_runs, chunk):
            rows: dict[str, list[dict]] = {t: [] for t in ins}
            for i in range(lo, min(n_runs, lo + chunk)):
                rid = uuid.uuid4().hex
                mi, s, cell = i % m, (i // m) % seeds, i // (m * seeds)
                method = methods[mi]
                start = now + i * 10
                status = "FAILED" if failed_every and i % failed_every == failed_every - 1 else "FINISHED"
                rows["runs"].append(dict(run_uuid=rid, name=f"run-{i}", source_type="LOCAL", source_name="synthetic",
                                         entry_point_name="", user_id="bench", status=status, start_time=start,
                                         end_time=start + 5, source_version="", lifecycle_stage="active",
                                         artifact_uri=f"{artifact_root}/{rid}/artifacts", experiment_id=int(exp_id)))
                tags = {T.TASK: TASK, T.METHOD: method, T.SEED: str(s),
                        T.CONDITION: conditions[cell % len(conditions)], T.STATUS: "exploratory",
                        T.GROUP: _h(method, cell), T.FINGERPRINT: _h(method, cell, s, i),
                        "mlflow.runName": f"run-{i}", "mlflow.user": "bench"}
                rows["tags"] += [dict(key=k, value=v, run_uuid=rid) for k, v in tags.items()]
                params = {"seed": str(s), "train.method": method, "train.cell": str(cell),
                          "train.lr": "1e-3" if i % 2 else "0.001"}
                for j in range(len(params), n_params):
                    params[f"model.p{j:02d}"] = str(j * 0.5)
                rows["params"] += [dict(key=k, value=v, run_uuid=rid) for k, v in list(params.items())[:n_params]]
                noise = rng.normal(size=(len(names), steps))
                for k, name in enumerate(names):
                    for st in range(steps):
                        v = float(mi + 0.1 * noise[k, st] + (steps - st) * 0.01)
                        if name == "metric.acc":
                            v = 1.0 - v / (m + 1)
                        rows["metrics"].append(dict(key=name, value=v, timestamp=start + st, run_uuid=rid,
                                                    step=st, is_nan=False))
                    last = rows["metrics"][-1]
                    rows["latest_metrics"].append(dict(key=name, value=last["value"], timestamp=last["timestamp"],
                                                       step=steps - 1, is_nan=False, run_uuid=rid))
            for table, batch in rows.items():
                if batch:
                    conn.execute(ins[table], batch)
    engine.dispose()
    return exp_id


def sqlite_store(db_path, template_dir) -> str:
    """An empty, migrated MLflow SQLite store at ``db_path`` (a copy of a cached template).

    Creating MLflow's schema runs every migration (seconds); tests that each need a fresh
    store copy one migrated file instead. Returns the ``sqlite:///`` URI.
    """
    import shutil
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    template = Path(template_dir) / "mlflow-template.db"
    if not template.exists():
        template.parent.mkdir(parents=True, exist_ok=True)
        tmp = template.with_suffix(f".{uuid.uuid4().hex}.tmp")
        MlflowClient(tracking_uri=f"sqlite:///{tmp}").search_experiments()
        tmp.replace(template)
    shutil.copyfile(template, db_path)
    return f"sqlite:///{Path(db_path).resolve()}"
