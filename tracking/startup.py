"""What a run records before the task's first line: the MLflow run created (or adopted from
``mlflow run`` or a launcher), its identity and provenance tags, its params, ``git.diff``,
``environment.json`` and ``config.yaml``; and the earlier runs of the same config that a
SIGKILL left RUNNING, closed KILLED.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import sys
import time
from typing import TYPE_CHECKING, Any

import yaml

from tracking import env, runs, store
from tracking import naming as _naming
from tracking import tags as T
from tracking.config import TaskConfig, fingerprint, flatten, group_key
from tracking.provenance import environment

if TYPE_CHECKING:
    from tracking.run import Run

_PARAM_MAX = 6000  # MLflow's limit on a param value


def create_or_adopt(client: Any, cfg: TaskConfig, experiment: str | None) -> tuple[str, str, bool]:
    """Adopt the run ``mlflow run`` (or a launcher) made, else create one, nested if asked."""
    import mlflow

    opts = cfg.launch
    run_id = env.MLFLOW_RUN_ID.get()
    if run_id:
        run = client.get_run(run_id)
        store.mark_experiment(run.info.experiment_id, c=client)
        _say_where(run.info.experiment_id, experiment or opts.experiment or cfg.task, cfg.task)
        return run_id, run.info.experiment_id, True
    parent = env.LABRUN_PARENT_RUN_ID.get()
    active = mlflow.active_run()
    if not parent and active is not None:
        parent = active.info.run_id
    name = experiment or opts.experiment or env.MLFLOW_EXPERIMENT_NAME.get()
    if env.MLFLOW_EXPERIMENT_ID.is_set() and not name:
        exp_id = env.MLFLOW_EXPERIMENT_ID.get()
        store.mark_experiment(exp_id, c=client)
    elif parent and not name:
        exp_id = client.get_run(parent).info.experiment_id
        store.mark_experiment(exp_id, c=client)
    else:
        exp_id = store.experiment_id(name or cfg.task)  # marks it (kind, description) itself
    run_id = runs.create(client, exp_id, name=opts.name or _naming.run_name(client, cfg), parent=parent)
    return run_id, exp_id, False


def _say_where(exp_id: str, wanted: str, task: str) -> None:
    """``mlflow run . -e TASK`` without ``--experiment-name`` made the run in Default before
    the task started, and MLflow cannot move a run: say so, once, with the command that works."""
    if str(exp_id) == "0" and wanted != "Default":
        print(f"labrun: mlflow run put this run in MLflow's Default experiment; to record it in "
              f"{wanted!r} run: mlflow run . -e {task} --experiment-name {wanted} ...", file=sys.stderr)


def _param_text(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text[:_PARAM_MAX]


def _identity_tags(cfg: TaskConfig) -> dict[str, str]:
    """What the run is: the tags analysis groups and filters by."""
    return {T.TASK: cfg.task, T.METHOD: cfg.method_tag, T.SEED: str(cfg.seed),
            T.CONDITION: cfg.condition, T.STATUS: cfg.launch.status,
            T.FINGERPRINT: fingerprint(cfg), T.GROUP: group_key(cfg)}


def _provenance_tags(run: "Run") -> dict[str, str]:
    """Where it ran: code, host, process (the last two let sweeps spot a dead run)."""
    return {T.GIT_COMMIT: run.git.commit, T.GIT_DIRTY: run.git.dirty, T.GIT_BRANCH: run.git.branch,
            T.GIT_REMOTE: run.git.remote, T.HOST: socket.gethostname(), T.PID: str(os.getpid()),
            T.HEARTBEAT: f"{time.time():.0f}", T.DEVICE: str(run.device)}


def record_start(run: "Run", adopted: bool) -> None:
    """The run's name, tags and params, ``git.diff`` when dirty, ``environment.json``."""
    from mlflow.entities import Param, RunTag

    opts, cfg, client = run.cfg.launch, run.cfg, run.client
    existing = client.get_run(run.run_id)
    run.name = opts.name or existing.info.run_name or run.run_id
    renamed = adopted and not opts.name and _naming.is_generated(existing.info.run_name)
    if renamed:  # `mlflow run` without --run-name gave it "classy-wolf-669"
        run.name = _naming.run_name(client, cfg)
    tags = {**_identity_tags(cfg), **_provenance_tags(run),
            **({T.RESUMED_FROM: opts.resume} if opts.resume else {}),
            **({T.WORLD_SIZE: str(run.world.size), T.DIST_BACKEND: run.world.backend}
               if run.world.distributed else {}),
            **({"mlflow.note.content": opts.description} if opts.description else {}),
            **({"mlflow.runName": opts.name} if opts.name and not adopted else {}),
            **({"mlflow.runName": run.name} if renamed else {}),
            **opts.tags}
    if run.git.commit != "unknown" and "mlflow.source.git.commit" not in existing.data.tags:
        tags["mlflow.source.git.commit"] = run.git.commit
    run.tags.update(tags)
    # `mlflow run` already logged the -P values as strings: logging them again with another
    # spelling ("1e-3" vs "0.001") would fail, so keys it owns are left as they are.
    params = [Param(k, _param_text(v)) for k, v in flatten(cfg.model_dump(mode="json")).items()
              if k not in existing.data.params]
    tag_rows = [RunTag(k, v) for k, v in tags.items()]
    for i in range(0, max(len(params), len(tag_rows)), 100):
        client.log_batch(run.run_id, params=params[i:i + 100], tags=tag_rows[i:i + 100])
    if run.git.dirty == "true":
        run.log_text(run.git.diff_text(), "git.diff")
    run.log_dict(environment(str(run.device), type(cfg).packages), "environment.json")


def close_stale_twins(run: "Run") -> None:
    """Earlier runs of this very config left RUNNING by a SIGKILL end KILLED now, so no
    run reads as running forever (a sweep's ledger does the same for its cells)."""
    fp = run.tags.get(T.FINGERPRINT)
    try:
        found = run.client.search_runs([run.experiment_id], filter_string=(
            f"tags.`{T.FINGERPRINT}` = '{fp}' and attributes.status = 'RUNNING'"), max_results=100)
    except Exception:
        return
    for other in found:
        if other.info.run_id != run.run_id:
            store.close_if_stale(run.client, other.info.run_id)


def config_yaml(run: "Run") -> str:
    """``config.yaml``: the experiment header, then the resolved config."""
    opts = run.cfg.launch
    header = {
        "name": run.name,
        "description": opts.description,
        "tags": {k: v for k, v in sorted(run.tags.items()) if k not in T.VOLATILE},
        "status": opts.status,
        "run_id": run.run_id,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": run.git.commit,
        "git_dirty": run.git.dirty,
        "base_config": opts.base_config,
        "cli_overrides": list(opts.overrides),
        "resumed_from": opts.resume,
        "resumed_epoch": run.resume.epoch if run.resume else None,
        "world_size": run.world.size,
    }
    doc = {"experiment": header, "config": run.cfg.model_dump(mode="json")}
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)


__all__ = ["close_stale_twins", "config_yaml", "create_or_adopt", "record_start"]
