"""What the tracking store already holds for a sweep's fingerprints: the skip/retry decision.

The store is asked once per sweep (one paginated search over the experiment's runs of
the task), never once per cell, so checking a 1,000-cell sweep costs one query.
Decisions per fingerprint:

- a FINISHED run exists                      -> ``done`` (skipped)
- a RUNNING run whose process is alive        -> ``elsewhere`` (another launcher has it; waited for)
- otherwise                                   -> ``todo``; earlier FAILED runs count against
  ``retries`` (``exhausted`` beyond them); KILLED and stale runs never count, since an
  interrupt or a crashed launcher says nothing about the cell. The newest earlier attempt
  that left checkpoints is the one to ``--resume``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from tracking import tags as T


FRESH_START = T.FRESH_START
"""On a cell's run that did not resume although earlier attempts left checkpoints: why."""
UNUSABLE = "labrun.checkpoint.unusable"
"""On a run none of whose checkpoints could be loaded (the resume's CheckpointError): never
resumed from again."""


def resume_failed(failure: str | None) -> bool:
    """The attempt died loading its resume source's checkpoints (corrupt, truncated, none
    valid): the source's fault, not the cell's, so it never counts against ``retries``."""
    return bool(failure) and failure.startswith("CheckpointError") and "resume" in failure


@dataclass
class Attempt:
    run_id: str
    status: str
    start_time: int
    tags: dict[str, str]
    stale: bool = False

    @property
    def pruned(self) -> bool:
        return self.tags.get(T.PRUNED) == "true"


@dataclass
class CellState:
    fingerprint: str
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def finished(self) -> Attempt | None:
        return next((a for a in self.attempts if a.status == "FINISHED"), None)

    @property
    def live(self) -> Attempt | None:
        return next((a for a in self.attempts if a.status == "RUNNING" and not a.stale), None)

    @property
    def failures(self) -> int:
        return sum(a.status == "FAILED" and not resume_failed(a.tags.get(T.FAILURE)) for a in self.attempts)

    def decision(self, retries: int) -> str:
        if self.finished:
            return "done"
        if self.live:
            return "elsewhere"
        if self.failures > retries:
            return "exhausted"
        return "todo"

    def resume_candidates(self) -> list[Attempt]:
        """Earlier unfinished attempts, newest first (the ones that may hold checkpoints)."""
        rest = [a for a in self.attempts if a.status in ("FAILED", "KILLED") or a.stale]
        return sorted(rest, key=lambda a: a.start_time, reverse=True)


# The only tags the decision reads (and all the SQL fast path fetches).
LEDGER_TAGS = (T.TASK, T.FINGERPRINT, T.HOST, T.PID, T.HEARTBEAT, T.PRUNED, T.RESUMED_FROM, T.WITHDRAWN,
               T.FAILURE)


def _sql_rows(client: Any, experiment_id: str) -> list[tuple[str, str, int, dict[str, str]]] | None:
    """Fast path for SQL stores: only the few tags the decision needs, in one query.

    ``search_runs`` also loads every param and metric of every run (35+ rows per run), which
    makes a 1,000-run check take over a second; this reads ~7 tag rows per run instead.
    Returns None (use ``search_runs``) for any other store, or when ``tracking.backends``
    turns the fast path off (MLflow version or schema moved, ``LABRUN_PUBLIC_API_ONLY``).
    """
    from tracking.backends import ledger_rows

    return ledger_rows(client.tracking_uri, experiment_id, LEDGER_TAGS)


class Ledger:
    """Fingerprint -> attempts, from one search of the store."""

    def __init__(self, client: Any, experiment_id: str | None, task: str) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.task = task
        self.states: dict[str, CellState] = {}

    def load(self, fingerprints: Iterable[str] | None = None, *, mark_stale: bool = False) -> "Ledger":
        from mlflow.entities import ViewType

        from tracking.store import is_stale

        wanted = set(fingerprints) if fingerprints is not None else None
        if wanted is None:
            self.states = {}
        else:  # a partial reload refreshes those fingerprints and keeps the rest
            for fp in wanted:
                self.states.pop(fp, None)
        if self.experiment_id is None:
            return self
        stale: list[Attempt] = []
        rows = _sql_rows(self.client, self.experiment_id)
        if rows is None:
            rows = self._search_rows(ViewType)
        for run_id, status, start_time, tags in rows:
            fp = tags.get(T.FINGERPRINT)
            if tags.get(T.TASK) != self.task or not fp or (wanted is not None and fp not in wanted):
                continue
            if tags.get(T.WITHDRAWN):  # a claim that lost (sweeps/claims.py): never an attempt
                continue
            attempt = Attempt(run_id, status, start_time or 0, tags)
            attempt.stale = is_stale(status, tags, start_time)
            if attempt.stale:
                stale.append(attempt)
            self.states.setdefault(fp, CellState(fp)).attempts.append(attempt)
        if mark_stale:
            for attempt in stale:
                self._mark_killed(attempt)
        return self

    def _search_rows(self, view_type: Any) -> list[tuple[str, str, int, dict[str, str]]]:
        """The public API: one paginated ``search_runs`` (any store, REST servers included)."""
        rows, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], filter_string=f"tags.`{T.TASK}` = '{self.task}'",
                run_view_type=view_type.ACTIVE_ONLY, max_results=50_000, page_token=token)
            rows += [(r.info.run_id, r.info.status, r.info.start_time, r.data.tags) for r in page]
            token = page.token
            if not token:
                return rows

    def _mark_killed(self, attempt: Attempt) -> None:
        """A dead RUNNING run would read as running forever in the UI and in analysis."""
        from tracking.store import mark_stale_killed

        try:
            mark_stale_killed(self.client, attempt.run_id)
            attempt.status = "KILLED"
        except Exception:
            pass

    def state(self, fp: str) -> CellState:
        return self.states.get(fp) or CellState(fp)

    def finished_run_ids(self, fingerprints: Iterable[str]) -> list[str]:
        """The FINISHED run of each of these cells that has one (their metrics name the charts)."""
        return [s.finished.run_id for fp in fingerprints if (s := self.state(fp)).finished is not None]

    def has_checkpoints(self, run_id: str) -> bool:
        try:
            return any(f.path.endswith(".ptz") or f.is_dir
                       for f in self.client.list_artifacts(run_id, "checkpoints"))
        except Exception:
            return False

    def resume_source(self, fp: str) -> str | None:
        """The newest earlier attempt of ``fp`` that left checkpoints (asked per retried cell),
        skipping runs whose checkpoints were found unusable (:data:`UNUSABLE`)."""
        self.skipped_unusable: dict[str, str] = getattr(self, "skipped_unusable", {})
        for attempt in self.state(fp).resume_candidates():
            if attempt.pruned or not self.has_checkpoints(attempt.run_id):
                continue
            why = self._unusable(attempt.run_id)
            if why:
                self.skipped_unusable[fp] = f"run {attempt.run_id}'s checkpoints cannot be loaded ({why})"
                continue
            return attempt.run_id
        return None

    def _unusable(self, run_id: str) -> str | None:
        try:
            return self.client.get_run(run_id).data.tags.get(UNUSABLE)
        except Exception:
            return None

    def mark_unusable(self, run_id: str, why: str) -> None:
        """Tag a run whose checkpoints a resume could not load, so none resumes from it again."""
        try:
            self.client.set_tag(run_id, UNUSABLE, why[:5000])
        except Exception:
            pass
