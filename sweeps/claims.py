"""Claimed cells: any number of sweep workers on one spec and store run each cell once.

The tracking store offers no compare-and-set (MLflow's REST API has none), so a claim is
the cell's run itself, and the rule is "the earliest claim wins":

1. Before launching a cell, a worker creates the cell's run (RUNNING, tagged with the cell's
   fingerprint, ``labrun.claim = host:pid`` and the worker's pid and heartbeat).
2. It waits ``LABRUN_CLAIM_SETTLE_S`` (0.5 s), then reads every run of that fingerprint.
3. Its claim wins if no run of the cell has FINISHED and no live claim is earlier (by
   ``(start_time, run_id)``); a live claim is a RUNNING run whose process is alive (same
   host: its pid; elsewhere: its heartbeat), so a crashed worker's claim is taken over
   once it is stale. A losing claim is *withdrawn*: tagged ``labrun.withdrawn = <the
   winner's run id>``, ended KILLED and deleted (``mlflow gc`` purges it; ledger and analysis
   never count it). The cell is then waited for as "running elsewhere".
4. The winner launches the task in that very run (``MLFLOW_RUN_ID``); from then on the
   task's own pid and heartbeat keep it live.

Why it is safe: a claim created after another worker's read has a later ``start_time`` as
long as the workers' clocks differ by less than the settle time, so of two overlapping
claims at least one worker sees the other's, and both agree on the earlier one.

Failure modes (documented in sweeps/README.md): clocks that differ by more than the settle
time can let two claims win (the cell then runs twice; analysis keeps the newer run per
fingerprint); a worker paused (SIGSTOP, a frozen VM) for longer than the heartbeat grace
after claiming on another host is judged dead and its cell taken over.
"""
from __future__ import annotations

import os
import socket
import time
from typing import Any, Iterable

from sweeps.ledger import Ledger
from tracking import env, runs
from tracking import tags as T
from tracking.store import elect_earliest


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Claims:
    """Create, settle and decide claims for a batch of jobs of one experiment and task."""

    def __init__(self, client: Any, ledger: Ledger, task: str, launcher: Any = None) -> None:
        self.client, self.ledger, self.task, self.launcher = client, ledger, task, launcher
        self.unsettled: list[str] = []
        """Claims of the batch being decided: a signal inside :meth:`claim` leaves them to
        :meth:`release_unsettled`, since no launcher knows them yet."""

    def claim(self, jobs: Iterable[Any]) -> tuple[list[Any], list[Any]]:
        """``(won, lost)``: each won job carries its run (``job.run_id``, ``MLFLOW_RUN_ID``)."""
        jobs = list(jobs)
        if not jobs:
            return [], []
        self.unsettled = []
        for job in jobs:
            job.run_id = self._create(job)
            self.unsettled.append(job.run_id)
            env.MLFLOW_RUN_ID.set(job.run_id, job.env)
        time.sleep(max(0.0, env.LABRUN_CLAIM_SETTLE_S.get() or 0.0))
        self.ledger.load([j.cell.fingerprint for j in jobs], mark_stale=True)
        won, lost = [], []
        for job in jobs:
            winner = self.winner(job.cell.fingerprint)
            if winner == job.run_id:
                won.append(job)
            else:
                self.withdraw(job.run_id, winner or "unknown")
                lost.append(job)
        self.unsettled = []
        return won, lost

    def release_unsettled(self, reason: str) -> None:
        """End the claims an interrupted :meth:`claim` made but never handed to a launcher."""
        for run_id in self.unsettled:
            self.release(run_id, "KILLED", reason)
        self.unsettled = []

    def winner(self, fingerprint: str) -> str | None:
        """The run that holds the cell: a FINISHED one, else the earliest live claim."""
        state = self.ledger.state(fingerprint)
        if state.finished:
            return state.finished.run_id
        return elect_earliest((a.start_time, a.run_id) for a in state.attempts
                              if a.status == "RUNNING" and not a.stale)

    def _create(self, job: Any) -> str:
        own = self.launcher.claim_tags(job) if self.launcher is not None else {}
        # Until the task adopts the run, the worker answers for it: if the worker dies
        # first, the claim is stale by this pid (or, elsewhere, by its heartbeat).
        tags = {**job.all_tags(), **own, **runs.owner_tags(heartbeat=True),
                T.TASK: self.task, T.FINGERPRINT: job.cell.fingerprint, T.CLAIM: worker_id()}
        return runs.create(self.client, job.experiment_id, name=job.run_name, tags=tags,
                           parent=job.parent_run_id, source=job.entry)

    def withdraw(self, run_id: str, winner: str) -> None:
        """A losing claim: never a result, never an attempt; kept in the trash for audit."""
        runs.withdraw(self.client, run_id, winner)

    def release(self, run_id: str | None, status: str, reason: str) -> None:
        """A claimed run whose process ended without ending it (it never started, or died
        before the task took the run over): end it, so it is not read as live."""
        if run_id:
            runs.end(self.client, run_id, status, reason=reason, if_running=True, quiet=True)
