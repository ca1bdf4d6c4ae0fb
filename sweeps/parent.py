"""The parent MLflow run of a sweep or study: the one row that holds its cells together.

Running the same sweep again continues the same parent (found by its tags), so a sweep
resumed three times still reads as one sweep with all its cells nested under it. Under
``mlflow run`` (``MLFLOW_RUN_ID`` set) the run MLflow created is adopted instead.
"""
from __future__ import annotations

import os
import socket
import sys
import time
from typing import Any

from tracking import env, runs
from tracking import tags as T
from tracking.store import elect_earliest


def open_parent(client: Any, experiment_id: str, *, kind: str, name: str,
                extra_tags: dict[str, str] | None = None, reuse: bool = True,
                _adopt: bool = True) -> tuple[str, bool]:
    """Adopt ``MLFLOW_RUN_ID``, else reopen this sweep's newest parent, else create one.

    Returns ``(run_id, reopened)``.
    """
    tags = {T.KIND: kind, T.SWEEP: name, T.HOST: socket.gethostname(), T.PID: str(os.getpid()),
            **(extra_tags or {})}
    adopted = env.MLFLOW_RUN_ID.get() if _adopt else None
    if adopted and client.get_run(adopted).info.experiment_id == experiment_id:
        runs.reopen(client, adopted, tags)
        return adopted, True
    if adopted:  # MLflow's run is elsewhere (Default): it points to the sweep's own parent
        run_id, reopened = open_parent(client, experiment_id, kind=kind, name=name, extra_tags=extra_tags,
                                       reuse=reuse, _adopt=False)
        _point(client, adopted, experiment_id, run_id, kind, name)
        return run_id, reopened
    if reuse:
        found = _parents(client, experiment_id, kind, name)
        if found:
            run_id = max(found, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id  # the newest
            runs.reopen(client, run_id, {k: tags[k] for k in (T.HOST, T.PID)})
            return run_id, True
    run_id = runs.create(client, experiment_id, name=f"{kind}:{name}", tags=tags,
                         source=" ".join(sys.argv[:1]) or "labrun")
    if not reuse:
        return run_id, False
    # Workers that start the same sweep at the same moment each made a parent: like a cell's
    # claim (sweeps/claims.py), the earliest one is the sweep's and the others go.
    time.sleep(max(0.0, env.LABRUN_CLAIM_SETTLE_S.get() or 0.0))
    first = elect_earliest((r.info.start_time, r.info.run_id)
                           for r in _parents(client, experiment_id, kind, name)) or run_id
    if first != run_id:
        runs.withdraw(client, run_id, first)
        return first, True
    return run_id, False


def _point(client: Any, run_id: str, experiment_id: str, parent_id: str, kind: str, name: str) -> None:
    """The run ``mlflow run`` made outside the spec's experiment: a pointer to where the work is."""
    from tracking import views

    exp = client.get_experiment(experiment_id).name
    note = (f"{kind} `{name}` runs in experiment [{exp}]({views.page_link(experiment_id, views.default_view(client, experiment_id))}) "
            f"(parent run {parent_id})")
    runs.set_tags(client, run_id, {T.KIND: f"{kind}-launcher", T.SWEEP: name, "mlflow.note.content": note,
                                   T.SWEEP + ".parent": parent_id})
    print(f"labrun: mlflow run put its run {run_id} in another experiment; the {kind} {name!r} runs in "
          f"experiment {exp!r} (parent run {parent_id}): {views.experiment_link(client, experiment_id)}",
          file=sys.stderr, flush=True)


def _parents(client: Any, experiment_id: str, kind: str, name: str) -> list[Any]:
    from mlflow.entities import ViewType

    return client.search_runs(
        [experiment_id], filter_string=f"tags.`{T.KIND}` = '{kind}' and tags.`{T.SWEEP}` = '{name}'",
        run_view_type=ViewType.ACTIVE_ONLY, max_results=1000)


def close_parent(client: Any, run_id: str, status: str, metrics: dict[str, float]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    step = int(time.time())  # each resumption adds a point; the last one is the current count
    rows = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    if rows:
        client.log_batch(run_id, metrics=rows)
    runs.end(client, run_id, status, end_time=now)


def end_if_running(client: Any, run_id: str, status: str, reason: str, what: str = "parent run") -> None:
    """A sweep's or study's parent that the run of the sweep itself could not close (a
    failure, an interrupt outside the cells) ends ``status`` with ``reason``, never RUNNING;
    one it already closed is left as it is."""
    try:
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, T.FAILURE, reason[:5000])
            close_parent(client, run_id, status, {})
    except Exception as err:  # the store itself may be what failed
        print(f"(could not end the {what} {run_id} {status}: {err})", file=sys.stderr)

