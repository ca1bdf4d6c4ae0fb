"""How a run ended, and its record in the store: the MLflow status, the failure reason and
research status, ``summary.json``, ``REPORT.md`` / ``REPORT.html``, and the process's exit.

Every step of the record is guarded on its own (:func:`guard`): one that fails prints one
line and the rest still happen, so a broken report never costs a run its status.
"""
from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from tracking import observers as _observers
from tracking import tags as T
from tracking.checkpoint.errors import UnsafeCheckpoint
from tracking.divergence import NonFinite
from tracking.exits import EXIT_CONFIG, EXIT_FAILED, EXIT_FINISHED, EXIT_PRUNED, EXIT_SIGINT, EXIT_SIGTERM
from tracking.signals import Terminated

if TYPE_CHECKING:
    from tracking.run import Run

log = logging.getLogger("labrun")


@dataclass
class Outcome:
    """How the ``with`` block ended: the MLflow status, the process exit code, and the
    exception to re-raise once the run is closed (a SystemExit or a task's error)."""

    status: str = "FINISHED"
    failure: str | None = None
    exit_code: int = EXIT_FINISHED
    exc: BaseException | None = None
    pruned: bool = False
    trace: str | None = None
    """The traceback to keep when it is not ``exc``'s (another DDP rank's failure)."""

    @classmethod
    def of(cls, exc: BaseException) -> "Outcome":
        if isinstance(exc, _observers.Pruned):
            return cls("KILLED", exit_code=EXIT_PRUNED, pruned=True)
        if isinstance(exc, Terminated):
            return cls("KILLED", f"Interrupted: {exc}", EXIT_SIGTERM)
        if isinstance(exc, KeyboardInterrupt):
            return cls("KILLED", "Interrupted: KeyboardInterrupt", EXIT_SIGINT)
        if isinstance(exc, UnsafeCheckpoint):  # refused input, like a config error: exit 2
            return cls("FAILED", f"{type(exc).__name__}: {exc}", EXIT_CONFIG, exc)
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            return cls(exc=exc)
        if isinstance(exc, SystemExit):
            return cls("FAILED", f"SystemExit: {exc.code}", EXIT_FAILED, exc)
        return cls("FAILED", f"{type(exc).__name__}: {exc}", EXIT_FAILED, exc)

    def settle(self, run_id: str) -> None:
        """After the run is closed: re-raise the task's exception, or exit as a killed run does."""
        if isinstance(self.exc, (NonFinite, UnsafeCheckpoint)):  # an outcome, not a bug: one line
            print(f"labrun: run {run_id} FAILED ({self.failure})", file=sys.stderr)
            raise SystemExit(self.exit_code)
        if self.exc is not None:
            raise self.exc
        if self.status == "FAILED":  # another rank's failure: its traceback is in the run
            print(f"labrun: run {run_id} FAILED ({self.failure}); its traceback.txt has the rest", file=sys.stderr)
            raise SystemExit(self.exit_code)
        if self.status == "KILLED":
            if not self.pruned:
                print(f"labrun: run {run_id} KILLED ({self.failure}); continue it with --resume {run_id}",
                      file=sys.stderr)
            raise SystemExit(self.exit_code)


def guard(run_id: str) -> Callable[..., Any]:
    def guarded(what: str, fn: Callable, *args: Any) -> Any:
        """``fn(*args)``, or None (with one line on stderr) when it raises."""
        try:
            return fn(*args)
        except Exception as err:  # one broken step must not cost the rest (or the status)
            print(f"labrun: could not {what} for run {run_id}: {err}", file=sys.stderr)
            return None
    return guarded


class OutcomeRecorder:
    """Writes how one run ended: status and failure tags, the summary, the report."""

    def __init__(self, run: "Run") -> None:
        self.run = run
        self.guarded = guard(run.run_id)

    def record(self, end: Outcome) -> None:
        """Failure and research status, then ``summary.json`` and the report built from it."""
        run, guarded = self.run, self.guarded
        record_outcome(run.client, run.run_id, end, guarded, run.tags)
        from tracking.report import report_html, report_markdown, summary_json

        text = summary_json(self.summary(end))
        guarded("write summary.json", run.log_text, text, "summary.json")
        md = guarded("render REPORT.md", report_markdown, json.loads(text))
        if md is not None:  # rendered once, written as Markdown and as HTML with the figures
            guarded("write REPORT.md", run.log_text, md, "REPORT.md")
            guarded("write REPORT.html", lambda: run.log_text(report_html(md, run.local_dir), "REPORT.html"))

    def summary(self, end: Outcome) -> dict[str, Any]:
        run = self.run
        opts = run.cfg.launch
        return {
            "run_id": run.run_id,
            "name": run.name,
            "description": opts.description,
            "task": run.cfg.task,
            "outcome": end.status,
            "failure": end.failure,
            "tags": {k: v for k, v in sorted(run.tags.items()) if k.startswith(T.PREFIX)},
            "git": {"commit": run.git.commit, "branch": run.git.branch, "dirty": run.git.dirty},
            "base_config": opts.base_config,
            "cli_overrides": list(opts.overrides),
            "resumed_from": opts.resume,
            "resumed_step": run.resume.global_step if run.resume else None,
            "duration_s": time.time() - run.started_at,
            "training": run.metrics.summary(),
            "components": {k: v.as_dict() for k, v in run.components.items()},
            "results": run.results,
            "figures": run.figures,
            "datasets": run.datasets,
            "models": {k: v.as_dict() for k, v in run.models.items()},
            "checkpoints": list(run.checkpoints.files),
        }


def _traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def end_mlflow_run(client: Any, run_id: str, status: str, guarded: Callable) -> None:
    import mlflow

    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        guarded("end the run", mlflow.end_run, status)
    else:
        guarded("end the run", client.set_terminated, run_id, status)


def record_outcome(client: Any, run_id: str, end: Outcome, guarded: Callable,
                   tags: dict[str, str]) -> None:
    """Failure reason, research status, traceback and pruning into the store (and ``tags``,
    the run's own copy that the summary reports)."""
    if end.failure:
        tags[T.FAILURE] = end.failure
        guarded("tag the failure", client.set_tag, run_id, T.FAILURE, end.failure[:5000])
        log.error("run %s %s: %s", run_id, end.status, end.failure)
    if end.status == "FAILED":
        tags[T.STATUS] = "failed"
        guarded("set the research status", client.set_tag, run_id, T.STATUS, "failed")
        trace = end.trace or (_traceback(end.exc) if end.exc is not None else None)
        if trace:
            guarded("upload the traceback", client.log_text, run_id, trace, "traceback.txt")
    if end.pruned:
        tags[T.PRUNED] = "true"
        guarded("tag the pruning", client.set_tag, run_id, T.PRUNED, "true")


def fail_unbuilt(client: Any, run_id: str, end: Outcome) -> None:
    """The run exists but its handle could not be built (no temp dir, broken logging...):
    end it with the reason instead of leaving it RUNNING forever."""
    guarded = guard(run_id)
    if end.status == "FINISHED":  # only an exception can get here
        end = Outcome("FAILED", "RuntimeError: the run could not start", EXIT_FAILED)
    record_outcome(client, run_id, end, guarded, {})
    end_mlflow_run(client, run_id, end.status, guarded)


__all__ = ["Outcome", "OutcomeRecorder", "end_mlflow_run", "fail_unbuilt", "guard",
           "record_outcome"]
