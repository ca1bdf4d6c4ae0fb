"""The run-matrix driver: plan against the store, launch what is missing, survive interrupts.

A sweep can be stopped at any moment (Ctrl-C, SIGTERM, SIGKILL, a crashed node) and the
same command finishes the rest: finished cells are skipped by fingerprint, killed cells
resume from their newest checkpoint, failed ones are retried up to ``retries``, and a cell
some other worker is running right now is waited for, never duplicated: any number of
``labrun sweep`` processes on one spec and store share the cells, each claimed before it is
launched (:mod:`sweeps.claims`). :class:`Sweep` holds the steps: plan, open, then claim and
launch / poll / watch until nothing is left, and finish.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
import tempfile
import time
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TextIO

from sweeps.launchers.base import Job, launcher_class, make_launcher, outcome_of
from sweeps.ledger import Ledger
from sweeps.matrix import Cell, Expansion
from sweeps.plan_view import PlanView, head_line
from sweeps.progress import Labels, QuietPipe, SweepProgress, summarize, table
from sweeps.spec import SweepSpec, dump
from tracking import env
from tracking import tags as T
from tracking.exits import EXIT_CELLS_FAILED, EXIT_FINISHED, EXIT_SIGINT, EXIT_SIGTERM
from tracking.signals import Terminated, sigterm_as_exception

ELSEWHERE_POLL_S = 3.0


def cell_job(cell: Cell, *, entry: str, module: str, config: str | None, experiment: str,
             experiment_id: str, parent_run_id: str, sweep_name: str, attempt: int = 1,
             resume: str | None = None, logs: Path | None = None,
             tags: dict[str, str] | None = None, env: dict[str, str] | None = None) -> Job:
    key = uuid.uuid4().hex
    return Job(key=key, entry=entry, module=module, config=config, overrides=list(cell.overrides),
               experiment=experiment, experiment_id=experiment_id, parent_run_id=parent_run_id,
               run_name=_cell_name(cell, entry, resume),
               tags={T.SWEEP: sweep_name, T.ATTEMPT: str(attempt), **cell.tags, **(tags or {})},
               env=dict(env or {}), resume=resume, cell=cell, attempt=attempt,
               log_path=(logs / f"cell{cell.index:04d}-attempt{attempt}.log") if logs else None)


def _cell_name(cell: Cell, entry: str, resume: str | None) -> str:
    """A resumed cell keeps its name with a suffix (``-r1``), as ``labrun run --resume`` does."""
    from tracking.naming import resumed_name

    name = getattr(cell, "short_name", None) or cell.run_name(getattr(cell, "name_prefix", "") or entry)
    if not resume:
        return name
    try:
        from tracking import store

        old = store.client().get_run(resume).info.run_name or name
    except Exception:
        old = name
    return resumed_name(old)


def _plan(spec: SweepSpec) -> tuple[str, str, Expansion | list[Cell], str]:
    """The task's name, its module, the cells and the launcher: a labrun task of this
    checkout (its :class:`Expansion`, which streams the cells, so a dry run of a million
    holds none), or any MLflow project's entry point (a list of cells, launched through
    ``mlflow run``)."""
    from tracking.config import ConfigError
    from tracking.tasks import entry_points, load_task, project_entry, project_root

    here = spec.project in (".", "")
    if here and spec.entry not in entry_points():
        load_task(spec.entry)  # raises: unknown task, naming the tasks there
    if here:
        try:
            task = load_task(spec.entry)
        except (ConfigError, ImportError):
            task = None  # not a labrun task: swept as a foreign project below
        if task is not None:
            expansion = Expansion(spec, task.schema)  # every axis value checked here, before anything
            return task.name, task.module, expansion, spec.launcher
    from sweeps.matrix import expand_foreign, foreign_task

    ep = project_entry(str(project_root()) if here else spec.project, spec.entry, spec.version)
    if spec.launcher not in ("local", "mlflow"):
        raise ConfigError(f"entry point {spec.entry!r} of {ep.uri} is not a labrun task: it runs "
                          f"through `mlflow run` (launcher mlflow), not launcher {spec.launcher!r}")
    cells = expand_foreign(spec, ep)
    for cell in cells:
        cell.name_prefix = ep.name
    return foreign_task(ep), "", cells, "mlflow"


def find_run(client: Any, experiment_id: str, job: Job) -> Any | None:
    """The run a job made (by its ``labrun.job`` tag), or None if the task never started one."""
    if job.run_id:
        try:
            return client.get_run(job.run_id)
        except Exception:
            return None
    found = client.search_runs([experiment_id], filter_string=f"tags.`{T.JOB}` = '{job.key}'",
                               max_results=1)
    return found[0] if found else None


@dataclass
class _Pending:
    """A cell waiting for a slot: a first launch (attempt from the ledger) or a retry."""

    cell: Cell
    attempt: int | None = None
    resume: str | None = None
    fresh: str | None = None
    """Why this attempt starts fresh although earlier ones left checkpoints (a tag on its run)."""


class Sweep:
    """One ``labrun sweep``: plan, then claim, launch and poll cells until none is left, then
    finish. The steps read in order in :meth:`run`; state lives on the object, not in closures.

    Several workers may run the same sweep on one store: each cell is claimed before it is
    launched (:mod:`sweeps.claims`), so it runs once, and a cell another worker holds is
    watched until it finishes there (or is retried here when that worker's attempt ends).
    """

    def __init__(self, spec: SweepSpec, raw: dict[str, Any], out: TextIO | None = None) -> None:
        self.spec, self.raw = spec, raw
        self.out = out or sys.stdout
        self.results: dict[str, tuple[str, str | None]] = {}
        self.queue: deque[_Pending] = deque()
        self.elsewhere: set[str] = set()
        self.failures: dict[str, int] = {}
        self.interrupted: int | None = None  # the signal that stopped the sweep
        self.launcher: Any = None
        self.parent_id: str | None = None
        self.view: str | None = None

    # ------------------------------------------------------------------ the steps, in order
    def run(self, *, dry_run: bool = False, fmt: str = "table") -> int:
        """EXIT_FINISHED (every cell finished), EXIT_CELLS_FAILED (some did not), or
        EXIT_SIGINT / EXIT_SIGTERM (interrupted: the same command again finishes the rest).

        SIGTERM is an exception from the first line, so a ``kill`` while planning or opening
        the parent exits 143 as one during the cells does; any other failure once the parent
        run exists ends it FAILED with the reason (never left RUNNING), then propagates.
        """
        with sigterm_as_exception():
            try:
                self.plan(dry_run)
                if dry_run:
                    return self.show_plan(fmt)
                self.out = QuietPipe(self.out)  # a reader gone (| head) does not stop the cells
                self.open()
                self.loop()
                return self.finish()
            except KeyboardInterrupt as exc:  # outside the loop: planning, opening, finishing
                return self.stopped_outside_loop(exc)
            except BaseException as exc:  # the sweep's own failure (not a cell's): the parent FAILED
                self._end_parent("FAILED", f"{type(exc).__name__}: {exc}")
                raise

    def loop(self) -> None:
        """Claim, launch, poll and watch until no cell is left; Ctrl-C/SIGTERM stop the cells."""
        old_int = signal.getsignal(signal.SIGINT)
        try:
            while self.busy():
                self.launch()
                self.poll()
                self.watch()
                self.progress.set_running(self.launcher.running())
                time.sleep(0.2)
        except KeyboardInterrupt as exc:
            self.interrupt(exc)
        finally:
            signal.signal(signal.SIGINT, old_int)
            self.launcher.close()
            self.progress.close()

    def stopped_outside_loop(self, exc: KeyboardInterrupt) -> int:
        """Interrupted before any cell ran (or while finishing): the parent, if it exists,
        ends KILLED; the exit code says which signal."""
        code = EXIT_SIGTERM if isinstance(exc, Terminated) else EXIT_SIGINT
        self._end_parent("KILLED", f"Interrupted: {'SIGTERM' if code == EXIT_SIGTERM else 'Ctrl-C'} "
                                   f"before the sweep's cells ran or after they ended")
        print("\ninterrupted: no cell is running; run the same command again to go on",
              file=sys.stderr, flush=True)
        return code

    def _end_parent(self, status: str, reason: str) -> None:
        if self.launcher is not None:
            with contextlib.suppress(Exception):
                self.launcher.close()
        if self.parent_id is not None:
            from sweeps.parent import end_if_running

            end_if_running(self.client, self.parent_id, status, reason)

    def plan(self, dry_run: bool) -> None:
        """The cells, and what the store already holds for each (one query). A dry run
        keeps no cell: :meth:`show_plan` streams them twice (counts, then rows)."""
        from tracking import store

        spec = self.spec
        self.task, self.module, self.source, self.launcher_name = _plan(spec)
        self.labels = Labels(spec)
        if not dry_run and self.module:
            launcher_class(self.launcher_name).prewarm(self.module)
        env.quiet()
        self.client = client = store.client()
        # Under `mlflow run -e sweep` the parent MLflow made may sit anywhere (Default, without
        # --experiment-name): the cells and their ledger stay in the spec's experiment (an
        # experiment the user chose with --experiment-name counts when the spec names none).
        adopted = env.MLFLOW_RUN_ID.get() if not dry_run else None
        chosen = client.get_run(adopted).info.experiment_id if adopted else None
        self.exp_name = spec.experiment or (client.get_experiment(chosen).name
                                            if chosen not in (None, "0") else spec.entry)
        self.exp_id = store.experiment_id(self.exp_name, create=not dry_run,
                                          description=spec.description or None)
        if dry_run:
            self.ledger = Ledger(client, self.exp_id, self.task).load(None)
            return
        self.cells = list(self.source.cells() if isinstance(self.source, Expansion) else self.source)
        _name_cells(self.cells, spec.entry)
        fps = [c.fingerprint for c in self.cells]
        self.ledger = Ledger(client, self.exp_id, self.task).load(fps, mark_stale=True)
        self.decisions = {c.fingerprint: self.ledger.state(c.fingerprint).decision(spec.retries)
                          for c in self.cells}
        self.n = {k: sum(v == k for v in self.decisions.values())
                  for k in ("done", "todo", "elsewhere", "exhausted")}
        self.count = len(self.cells)

    def show_plan(self, fmt: str = "table") -> int:
        """The head line, then one row per cell, written as it is made (:class:`PlanView`)."""
        view = PlanView(self.spec, self.source, self.labels, self.ledger, self.out)
        return view.show(fmt, lambda count, n: head_line(self.spec, count, self.exp_name, n, self.launcher_name))

    def open(self) -> None:
        """The sweep's parent run (shared by every worker), the launcher, the queue."""
        self.by_fp = {c.fingerprint: c for c in self.cells}
        from sweeps.claims import Claims
        from sweeps.parent import open_parent
        from tracking import store

        spec, client = self.spec, self.client
        note = {"mlflow.note.content": spec.description} if spec.description else {}
        self.parent_id, reopened = open_parent(client, self.exp_id, kind="sweep", name=spec.name,
                                               extra_tags={T.SWEEP_ENTRY: spec.entry, **note})
        client.log_text(self.parent_id, dump(self.raw), "sweep.yaml")
        if not reopened:
            try:
                client.log_batch(self.parent_id, params=_params(spec, len(self.cells)))
            except Exception:
                pass
        from tracking import views

        self.view = views.save_sweep_view(client, self.exp_id, spec.name, params=_varied(self.cells),
                                          run_ids=self.ledger.finished_run_ids(self.by_fp))
        print(head_line(spec, self.count, self.exp_name, self.n, self.launcher_name)
              + f"\nparent run {self.parent_id}" + (" (continued)" if reopened else "")
              + f"; in the MLflow UI: {views.experiment_url(self.exp_id, self.view)}", file=self.out, flush=True)
        self.logs = Path(tempfile.mkdtemp(prefix=f"labrun-sweep-{spec.name}-"))
        self.failures = {c.fingerprint: self.ledger.state(c.fingerprint).failures for c in self.cells}
        self.elsewhere = {fp for fp, d in self.decisions.items() if d == "elsewhere"}
        self.queue = deque(_Pending(c) for c in self.cells if self.decisions[c.fingerprint] == "todo")
        self.progress = SweepProgress(len(self.queue) + len(self.elsewhere), self.n["done"], f"sweep {spec.name}")
        options = spec.launcher_options() if self.launcher_name == spec.launcher else None
        self.launcher = make_launcher(self.launcher_name, spec.parallel, module=self.module, options=options)
        self.claims = Claims(client, self.ledger, self.task, self.launcher)
        self.last_watch = time.time()

    def busy(self) -> bool:
        return bool(self.queue or self.elsewhere or self.launcher.running() or self.launcher.pending())

    def launch(self) -> None:
        """Claim as many queued cells as there are free slots; launch the claims that won."""
        free = self.spec.parallel - self.launcher.running() - self.launcher.pending()
        if free <= 0 or not self.queue:
            return
        batch = [self.queue.popleft() for _ in range(min(free, len(self.queue)))]
        self.ledger.load([p.cell.fingerprint for p in batch], mark_stale=True)  # another worker's news
        jobs = [job for job in map(self._job_if_needed, batch) if job is not None]
        won, lost = self.claims.claim(jobs)
        for job in won:
            self.launcher.submit(job)
        for job in lost:
            self.elsewhere.add(job.cell.fingerprint)

    def _job_if_needed(self, pending: _Pending) -> Job | None:
        """The job for a queued cell, unless the store says it is done or held elsewhere."""
        cell, fp = pending.cell, pending.cell.fingerprint
        state = self.ledger.state(fp)
        if state.finished:
            self._done_elsewhere(fp, state.finished.run_id)
            return None
        if state.live:
            self.elsewhere.add(fp)
            return None
        attempt = pending.attempt or len(state.attempts) + 1
        resume, fresh = pending.resume, pending.fresh
        if pending.attempt is None and state.resume_candidates():
            resume = self.ledger.resume_source(fp)
            fresh = None if resume else getattr(self.ledger, "skipped_unusable", {}).get(fp)
        return self._job(cell, attempt, resume, fresh)

    def _job(self, cell: Cell, attempt: int, resume: str | None, fresh: str | None = None) -> Job:
        from sweeps.ledger import FRESH_START

        spec = self.spec
        tags = {**_cell_note(spec, cell), **({FRESH_START: fresh[:5000]} if fresh else {})}
        return cell_job(cell, entry=spec.entry, module=self.module, config=spec.config,
                        experiment=self.exp_name, experiment_id=self.exp_id, parent_run_id=self.parent_id,
                        sweep_name=spec.name, attempt=attempt, resume=resume, logs=self.logs, tags=tags)

    def poll(self) -> None:
        """Cells whose process ended: record them, or queue their retry."""
        for job, code in self.launcher.poll():
            self._ended(job, code)

    def _ended(self, job: Job, code: int) -> None:
        cell, fp, kind = job.cell, job.cell.fingerprint, outcome_of(code)
        self.claims.release(job.run_id, "KILLED" if kind == "killed" else "FAILED",
                            f"CellProcess: the cell's process exited {code} before ending its run")
        run = find_run(self.client, self.exp_id, job)
        run_id = run.info.run_id if run else None
        if kind in ("finished", "pruned"):
            self.results[fp] = (kind, run_id)
            self.progress.event(kind, self.labels(cell), run_id)
            return
        if job.resume and run is not None and self._resume_failed(job, run):
            return
        if kind != "config":
            self.failures[fp] += 1
        if kind != "config" and self.failures[fp] <= self.spec.retries:
            resume = run_id if run_id and self.ledger.has_checkpoints(run_id) else self.ledger.resume_source(fp)
            self.progress.event("retried", f"{self.labels(cell)} ({kind}, exit {code}); attempt {job.attempt + 1}"
                                + (f" resumes {resume[:12]}" if resume else ""), run_id, final=False)
            self.queue.appendleft(_Pending(cell, job.attempt + 1, resume))
            return
        self.results[fp] = ("failed", run_id)
        self.progress.event("failed", f"{self.labels(cell)} (exit {code}; log {job.log_path})\n{job.tail()}", run_id)

    def _resume_failed(self, job: Job, run: Any) -> bool:
        """The attempt died loading its source's checkpoints: mark the source unusable and run
        the cell again from scratch (tagged why); the cell's own retries are not spent."""
        from sweeps.ledger import resume_failed

        failure = run.data.tags.get(T.FAILURE)
        if not resume_failed(failure):
            return False
        why = f"run {job.resume} has no loadable checkpoint ({failure})"
        self.ledger.mark_unusable(job.resume, failure or "")
        self.progress.event("retried", f"{self.labels(job.cell)}: {why}; attempt {job.attempt + 1} starts fresh",
                            run.info.run_id, final=False)
        self.queue.appendleft(_Pending(job.cell, job.attempt + 1, None, why))
        return True

    def watch(self) -> None:
        """Cells another worker holds: done there, still live, or back to us when it stopped."""
        if not self.elsewhere or time.time() - self.last_watch < ELSEWHERE_POLL_S:
            return
        self.last_watch = time.time()
        self.ledger.load(self.elsewhere, mark_stale=True)
        for fp in list(self.elsewhere):
            state = self.ledger.state(fp)
            if state.finished:
                self.elsewhere.discard(fp)
                self._done_elsewhere(fp, state.finished.run_id)
            elif not state.live:
                self.elsewhere.discard(fp)
                if state.failures > self.spec.retries:
                    self.results[fp] = ("failed", None)
                    self.progress.event("failed", self.labels(self.by_fp[fp]))
                else:  # that worker stopped or crashed: whoever claims first goes on
                    self.queue.append(_Pending(self.by_fp[fp]))

    def _done_elsewhere(self, fp: str, run_id: str) -> None:
        if fp not in self.results:
            self.results[fp] = ("finished", run_id)
            self.progress.event("finished", self.labels(self.by_fp[fp]) + " (by another worker)")

    def interrupt(self, exc: BaseException) -> None:
        """Ctrl-C or SIGTERM: running cells end KILLED (checkpoints kept); nothing new starts."""
        self.interrupted = signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT
        print("\ninterrupted: stopping running cells (they end KILLED) ...", file=sys.stderr, flush=True)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # nor a second kill
        self.claims.release_unsettled("Interrupted: the sweep stopped while claiming the cell")
        for job in self.launcher.stop():  # queued, never started: their claims go
            self.claims.release(job.run_id, "KILLED", "Interrupted: the sweep stopped before the cell started")
        for job, code in self.launcher.poll():
            self.claims.release(job.run_id, "KILLED", "Interrupted: the sweep stopped")
            run = find_run(self.client, self.exp_id, job)
            kind = outcome_of(code) if outcome_of(code) in ("finished", "pruned") else "killed"
            self.results[job.cell.fingerprint] = (kind, run.info.run_id if run else None)
            self.progress.event(kind, self.labels(job.cell))

    def finish(self) -> int:
        if any(kind == "failed" for kind, _ in self.results.values()):
            print(f"logs of the cells' processes: {self.logs}", file=self.out)
        else:  # every cell's own log is in its run (logs/train.log); these copies are not needed
            import shutil

            shutil.rmtree(self.logs, ignore_errors=True)
        code = _finish(self.client, self.spec, self.cells, self.exp_id, self.parent_id, self.task, self.n,
                       self.results, self.interrupted is not None, self.out, self.labels)
        from tracking import views

        ran = [rid for _, rid in self.results.values() if rid]
        self.view = views.save_sweep_view(self.client, self.exp_id, self.spec.name, params=_varied(self.cells),
                                          run_ids=ran + self.ledger.finished_run_ids(self.by_fp)) or self.view
        print(f"runs table: {views.experiment_url(self.exp_id, self.view)}", file=self.out, flush=True)
        if self.interrupted == signal.SIGTERM:
            return EXIT_SIGTERM
        return code


def run_sweep(spec: SweepSpec, raw: dict[str, Any], *, dry_run: bool = False,
              out: TextIO | None = None, fmt: str = "table") -> int:
    """``labrun sweep``: see :class:`Sweep`; ``fmt`` (table, csv, json) is the dry run's."""
    return Sweep(spec, raw, out).run(dry_run=dry_run, fmt=fmt)


def _outcome(counts: dict[str, int], skipped: int) -> str:
    """`` (2 finished, 1 failed; 6 skipped as already finished)``, leaving out what is zero."""
    bits = [summarize(counts.items()), f"{skipped} skipped as already finished" if skipped else ""]
    text = "; ".join(b for b in bits if b)
    return f" ({text})" if text else ""


def _name_cells(cells: list[Cell], entry: str) -> None:
    """Each cell's run name: its varied values, unique within the sweep, <= 32 characters."""
    from tracking.naming import short_names

    if not cells:
        return
    prefix = cells[0].name_prefix or entry
    for c, name in zip(cells, short_names([c.values for c in cells], prefix)):
        c.short_name = name


def _varied(cells: list[Cell]) -> list[str]:
    """The parameters that differ between cells: the runs table's columns."""
    from tracking.views import varied_params

    return [k for k in varied_params(c.values for c in cells) if k != "condition"]


def _cell_note(spec: SweepSpec, cell: Cell) -> dict[str, str]:
    """The spec's description, on each cell as the UI's description, with what the cell varies."""
    if not spec.description:
        return {}
    return {"mlflow.note.content": f"{spec.description.strip()}\n\nCell of sweep `{spec.name}`: {cell.label}"}


def _params(spec: SweepSpec, n_cells: int) -> list:
    from mlflow.entities import Param

    values = {"sweep.entry": spec.entry, "sweep.config": spec.config or "default",
              "sweep.cells": n_cells, "sweep.launcher": spec.launcher, "sweep.parallel": spec.parallel,
              "sweep.retries": spec.retries}
    return [Param(k, str(v)) for k, v in values.items()]


def _finish(client: Any, spec: SweepSpec, cells: list[Cell], exp_id: str, parent_id: str, task: str,
            planned: dict[str, int], results: dict[str, tuple[str, str | None]], interrupted: bool,
            out: TextIO, labels: Callable[[Cell], str]) -> int:
    from sweeps.parent import close_parent

    final = Ledger(client, exp_id, task).load([c.fingerprint for c in cells])
    rows, status_counts = [], {"FINISHED": 0, "FAILED": 0, "KILLED": 0, "missing": 0}
    for c in cells:
        state = final.state(c.fingerprint)
        best = state.finished or (max(state.attempts, key=lambda a: a.start_time) if state.attempts else None)
        status = best.status if best else "missing"
        if best is not None and best.tags.get(T.PRUNED) == "true":
            status = "PRUNED"
        status_counts[status] = status_counts.get(status, 0) + 1
        rows.append((c.index, labels(c), c.fingerprint, status, best.run_id if best else "",
                     len(state.attempts)))
    text = table(rows, ["#", "cell", "fingerprint", "status", "run", "attempts"])
    client.log_text(parent_id, text + "\n", "cells.md")
    counts = {k: sum(r[0] == k for r in results.values()) for k in ("finished", "failed", "killed", "pruned")}
    metrics = {"sweep.cells": len(cells), "sweep.planned": planned["todo"] + planned["elsewhere"],
               "sweep.skipped": planned["done"], "sweep.finished": counts["finished"],
               "sweep.failed": counts["failed"] + planned["exhausted"], "sweep.killed": counts["killed"],
               "sweep.pruned": counts["pruned"], "sweep.done_total": status_counts["FINISHED"]}
    incomplete = len(cells) - status_counts["FINISHED"] - status_counts.get("PRUNED", 0)
    status = "KILLED" if interrupted else ("FAILED" if incomplete else "FINISHED")
    close_parent(client, parent_id, status, metrics)
    print(text, file=out)
    print(f"sweep {spec.name!r}: {status_counts['FINISHED']}/{len(cells)} cells FINISHED"
          + _outcome(counts, planned["done"]), file=out, flush=True)
    if interrupted:
        print(f"interrupted with {incomplete} cells unfinished: run the same command again to finish "
              f"them (finished cells are skipped, killed ones resume from their checkpoints, or run "
              f"again where the task writes none)",
              file=out, flush=True)
        return EXIT_SIGINT
    return EXIT_CELLS_FAILED if incomplete else EXIT_FINISHED
