"""Runs no task owns: sweep and study parents, claims, launcher-made runs, analysis and check
runs, branch records, the run a config error fails, stale runs closed by whoever finds them.

A task's own run goes through :func:`tracking.start_run` (provenance, params, an outcome).
Every other run is created, re-opened, tagged and ended here, so that each of them carries the
same source and user tags (the UI's Source and User columns), a run that fails says why in
``labrun.failure``, and a run ended by someone else is never ended twice or over a better end.
"""
from __future__ import annotations

import contextlib
import getpass
import os
import socket
import sys
import time
from typing import Any, Iterator, Mapping

from tracking import tags as T

SOURCE_TYPE, SOURCE_NAME, USER = "mlflow.source.type", "mlflow.source.name", "mlflow.user"
PARENT = "mlflow.parentRunId"


def source_tags(source: str | None = None, kind: str = "LOCAL") -> dict[str, str]:
    """What MLflow's own fluent API records for a run: where it came from and who made it."""
    return {SOURCE_TYPE: kind, SOURCE_NAME: source or " ".join(sys.argv[:1]) or "python",
            USER: getpass.getuser()}


def owner_tags(heartbeat: bool = False) -> dict[str, str]:
    """This process answers for the run until a task adopts it: if it dies first, the run is
    stale by this pid (or, on another host, by the heartbeat) instead of lingering."""
    tags = {T.HOST: socket.gethostname(), T.PID: str(os.getpid())}
    if heartbeat:
        tags[T.HEARTBEAT] = f"{time.time():.0f}"
    return tags


def create(client: Any, experiment_id: str, *, name: str | None = None,
           tags: Mapping[str, str] | None = None, parent: str | None = None,
           source: str | None = None, owned: bool = False) -> str:
    """A new RUNNING run; returns its id.

    ``tags`` win over the source tags (a launcher says PROJECT where the default is LOCAL);
    ``parent`` nests it; ``owned`` adds this process's host and pid (:func:`owner_tags`).
    """
    all_tags = {**source_tags(source), **(owner_tags() if owned else {}), **(tags or {})}
    if parent:
        all_tags[PARENT] = parent
    run = client.create_run(experiment_id, tags=all_tags, run_name=name)
    return run.info.run_id


def reopen(client: Any, run_id: str, tags: Mapping[str, str] | None = None) -> None:
    """A run continued by a later process (a sweep resumed, a parent adopted): RUNNING again."""
    client.update_run(run_id, status="RUNNING")
    set_tags(client, run_id, tags or {})


def set_tags(client: Any, run_id: str, tags: Mapping[str, str]) -> None:
    for key, value in tags.items():
        client.set_tag(run_id, key, value)


def end(client: Any, run_id: str, status: str, *, reason: str | None = None,
        tags: Mapping[str, str] | None = None, end_time: int | None = None,
        if_running: bool = False, quiet: bool = False) -> bool:
    """End a run as ``status`` (FINISHED, FAILED, KILLED); True if this call ended it.

    ``reason`` becomes ``labrun.failure``. ``if_running``: only a run still RUNNING is ended,
    and a reason it already carries is kept (the task said why first). ``quiet``: a store
    error is swallowed (best-effort cleanup on a path that is already failing).
    """
    try:
        if if_running:
            run = client.get_run(run_id)
            if run.info.status != "RUNNING":
                return False
            if reason and T.FAILURE in run.data.tags:
                reason = None
        if reason:
            client.set_tag(run_id, T.FAILURE, reason[:5000])
        set_tags(client, run_id, tags or {})
        client.set_terminated(run_id, status, end_time=end_time)
        return True
    except Exception:
        if not quiet:
            raise
        return False


def withdraw(client: Any, run_id: str, winner: str) -> None:
    """A run that lost a race (a claim, a parent made twice): KILLED, tagged with the winner
    and deleted, so ledger and analysis never count it; kept in the trash for audit."""
    end(client, run_id, "KILLED", tags={T.WITHDRAWN: winner}, quiet=True)
    with contextlib.suppress(Exception):
        client.delete_run(run_id)


@contextlib.contextmanager
def recorded(client: Any, experiment_id: str, **create_args: Any) -> Iterator[str]:
    """A run that holds a piece of work done right here (an analysis, a check, a branch
    episode): FINISHED when the block completes, FAILED (and re-raised) when it does not."""
    run_id = create(client, experiment_id, **create_args)
    try:
        yield run_id
    except BaseException as exc:
        end(client, run_id, "FAILED", reason=f"{type(exc).__name__}: {exc}", quiet=True)
        raise
    end(client, run_id, "FINISHED")


STALE_REASON = "stale: its process is gone (crashed launcher or SIGKILL); marked KILLED by a sweep"


def close_stale(client: Any, run_id: str) -> None:
    """A dead RUNNING run would read as running forever in the UI and in analysis: KILLED with
    the reason, its journal replayed, its last log uploaded and its temp folder removed."""
    end(client, run_id, "KILLED", reason=STALE_REASON, end_time=int(time.time() * 1000))
    from tracking.leftovers import clean_run

    clean_run(client, run_id)


__all__ = ["STALE_REASON", "close_stale", "create", "end", "owner_tags", "recorded", "reopen",
           "set_tags", "source_tags", "withdraw"]
