"""The run-matrix driver: plan against the store, launch what is missing, survive interrupts.

A sweep can be stopped at any moment (Ctrl-C, SIGTERM, SIGKILL, a crashed node) and the
same command finishes the rest: finished cells are skipped by fingerprint, killed cells
resume from their newest checkpoint, failed ones are retried up to ``retries``, and a cell
some other launcher is running right now is waited for, never duplicated.
"""
from __future__ import annotations

import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

from sweeps.launchers.base import Job, launcher_class, make_launcher, outcome_of
from sweeps.ledger import Ledger
from sweeps.matrix import Cell, expand
from sweeps.progress import SweepProgress, summarize, table
from sweeps.spec import SweepSpec, dump
from tracking import env
from tracking import tags as T
from tracking.exits import EXIT_CELLS_FAILED, EXIT_FINISHED, EXIT_SIGINT

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

    name = cell.run_name(getattr(cell, "name_prefix", "") or entry)
    if not resume:
        return name
    try:
        from tracking import store

        old = store.client().get_run(resume).info.run_name or name
    except Exception:
        old = name
    return resumed_name(old)


def _plan(spec: SweepSpec) -> tuple[str, str, list[Cell], str]:
    """The task's name, its module, the cells and the launcher: a labrun task of this
    checkout, or any MLflow project's entry point (then launched through ``mlflow run``)."""
    from tracking.config import ConfigError
    from tracking.tasks import entry_points, load_task, project_root

    here = spec.project in (".", "")
    if here and spec.entry not in entry_points():
        load_task(spec.entry)  # raises: unknown task, naming the tasks there
    if here:
        try:
            task = load_task(spec.entry)
        except (ConfigError, ImportError):
            task = None  # not a labrun task: swept as a foreign project below
        if task is not None:
            return task.name, task.module, expand(spec, task.schema), spec.launcher
    from sweeps.launchers.mlflow_run import project_entry
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


class _Term(Exception):
    pass


def _describe(decision: str, state: Any, retries: int) -> str:
    if decision == "done":
        return f"skip (FINISHED {state.finished.run_id[:12]})"
    if decision == "elsewhere":
        return f"running elsewhere ({state.live.run_id[:12]}): wait"
    if decision == "exhausted":
        return f"failed {state.failures}x > retries={retries}: not run (raise retries to retry)"
    if state.attempts:
        kinds = summarize((s, sum(a.status == s or (s == "stale" and a.stale) for a in state.attempts))
                          for s in ("FAILED", "KILLED", "stale"))
        return f"rerun (earlier: {kinds})"
    return "run"


def run_sweep(spec: SweepSpec, raw: dict[str, Any], *, dry_run: bool = False,
              out: TextIO | None = None) -> int:
    """Plan, then launch; returns EXIT_FINISHED (all cells finished), EXIT_CELLS_FAILED (some did
    not) or EXIT_SIGINT (interrupted: the same command again finishes the rest)."""
    from tracking import store

    out = out or sys.stdout
    task_name, module, cells, launcher_name = _plan(spec)
    if not dry_run and module:
        launcher_class(launcher_name).prewarm(module)

    env.quiet()
    client = store.client()
    adopted = env.MLFLOW_RUN_ID.get() if not dry_run else None
    if adopted:
        exp_id = client.get_run(adopted).info.experiment_id
        exp_name = client.get_experiment(exp_id).name
    else:
        exp_name = spec.experiment or spec.entry
        exp_id = store.experiment_id(exp_name, create=not dry_run, description=spec.description or None)
    ledger = Ledger(client, exp_id, task_name).load([c.fingerprint for c in cells],
                                                    mark_stale=not dry_run)
    plan = {c.fingerprint: ledger.state(c.fingerprint).decision(spec.retries) for c in cells}
    n = {k: sum(v == k for v in plan.values()) for k in ("done", "todo", "elsewhere", "exhausted")}
    head = (f"sweep {spec.name!r}: {len(cells)} cells of {spec.entry!r} in experiment {exp_name!r} "
            f"({summarize((k, n[k]) for k in n)}); launcher {launcher_name}, parallel {spec.parallel}")
    if dry_run:
        rows = [(c.index, c.label, c.fingerprint, _describe(plan[c.fingerprint], ledger.state(c.fingerprint),
                                                            spec.retries)) for c in cells]
        print(head, file=out)
        print(table(rows, ["#", "cell", "fingerprint", "plan"]), file=out)
        print("(dry run: nothing launched)", file=out)
        return EXIT_FINISHED

    from sweeps.parent import open_parent

    note = {"mlflow.note.content": spec.description} if spec.description else {}
    parent_id, reopened = open_parent(client, exp_id, kind="sweep", name=spec.name,
                                      extra_tags={T.SWEEP_ENTRY: spec.entry, **note})
    client.log_text(parent_id, dump(raw), "sweep.yaml")
    if not reopened:
        try:
            client.log_batch(parent_id, params=_params(spec, len(cells)))
        except Exception:
            pass
    print(head + f"\nparent run {parent_id}" + (" (continued)" if reopened else "")
          + f"; in the MLflow UI: {store.experiment_url(exp_id)}", file=out, flush=True)
    logs = Path(tempfile.mkdtemp(prefix=f"labrun-sweep-{spec.name}-"))
    by_fp = {c.fingerprint: c for c in cells}
    failures = {c.fingerprint: ledger.state(c.fingerprint).failures for c in cells}
    results: dict[str, tuple[str, str | None]] = {}
    elsewhere = {fp for fp, d in plan.items() if d == "elsewhere"}
    todo = [c for c in cells if plan[c.fingerprint] == "todo"]
    progress = SweepProgress(len(todo) + len(elsewhere), n["done"], f"sweep {spec.name}")
    launcher = make_launcher(launcher_name, spec.parallel, module=module,
                             options=spec.launcher_options() if launcher_name == spec.launcher else None)

    def job_for(cell: Cell, attempt: int, resume: str | None) -> Job:
        return cell_job(cell, entry=spec.entry, module=module, config=spec.config,
                        experiment=exp_name, experiment_id=exp_id, parent_run_id=parent_id,
                        sweep_name=spec.name, attempt=attempt, resume=resume, logs=logs,
                        tags=_cell_note(spec, cell))

    def on_end(job: Job, code: int) -> None:
        cell = job.cell
        fp = cell.fingerprint
        kind = outcome_of(code)
        run = find_run(client, exp_id, job)
        run_id = run.info.run_id if run else None
        if kind in ("finished", "pruned"):
            results[fp] = (kind, run_id)
            progress.event(kind, cell.label, run_id)
            return
        if kind != "config":
            failures[fp] += 1
        if kind != "config" and failures[fp] <= spec.retries:
            resume = run_id if run_id and ledger.has_checkpoints(run_id) else ledger.resume_source(fp)
            progress.event("retried", f"{cell.label} ({kind}, exit {code}); attempt {job.attempt + 1}"
                           + (f" resumes {resume[:12]}" if resume else ""), run_id, final=False)
            launcher.submit(job_for(cell, job.attempt + 1, resume))
            return
        results[fp] = ("failed", run_id)
        progress.event("failed", f"{cell.label} (exit {code}; log {job.log_path})\n{job.tail()}", run_id)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old_term = signal.signal(signal.SIGTERM, on_term)
    old_int = signal.getsignal(signal.SIGINT)
    interrupted = False
    try:
        for cell in todo:
            prior = ledger.state(cell.fingerprint).resume_candidates()
            resume = ledger.resume_source(cell.fingerprint) if prior else None
            launcher.submit(job_for(cell, len(ledger.state(cell.fingerprint).attempts) + 1, resume))
        last_check = time.time()
        while launcher.running() or launcher.pending() or elsewhere:
            for job, code in launcher.poll():
                on_end(job, code)
            if elsewhere and time.time() - last_check > ELSEWHERE_POLL_S:
                last_check = time.time()
                ledger.load(elsewhere, mark_stale=True)
                for fp in list(elsewhere):
                    state = ledger.state(fp)
                    if state.finished:
                        results[fp] = ("finished", state.finished.run_id)
                        progress.event("finished", by_fp[fp].label + " (by another launcher)")
                        elsewhere.discard(fp)
                    elif not state.live:
                        elsewhere.discard(fp)
                        if state.failures > spec.retries:
                            results[fp] = ("failed", None)
                            progress.event("failed", by_fp[fp].label)
                        else:
                            launcher.submit(job_for(by_fp[fp], len(state.attempts) + 1,
                                                    ledger.resume_source(fp)))
            progress.set_running(launcher.running())
            time.sleep(0.2)
    except KeyboardInterrupt:
        interrupted = True
        print("\ninterrupted: stopping running cells (they end KILLED) ...", file=sys.stderr, flush=True)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip the cleanup
        launcher.stop()
        for job, code in launcher.poll():
            run = find_run(client, exp_id, job)
            kind = outcome_of(code) if outcome_of(code) in ("finished", "pruned") else "killed"
            results[job.cell.fingerprint] = (kind, run.info.run_id if run else None)
            progress.event(kind, job.cell.label)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
        launcher.close()
        progress.close()
    if any(kind == "failed" for kind, _ in results.values()):
        print(f"logs of the cells' processes: {logs}", file=out)
    else:  # every cell's own log is in its run (logs/train.log); these copies are not needed
        import shutil

        shutil.rmtree(logs, ignore_errors=True)
    return _finish(client, spec, cells, exp_id, parent_id, task_name, n, results, interrupted, out)


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
            out: TextIO) -> int:
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
        rows.append((c.index, c.label, c.fingerprint, status, best.run_id if best else "",
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
    print(f"sweep {spec.name!r}: {status_counts['FINISHED']}/{len(cells)} cells FINISHED "
          f"({summarize((k, v) for k, v in counts.items())}; {planned['done']} skipped as already finished)",
          file=out, flush=True)
    if interrupted:
        print(f"interrupted with {incomplete} cells unfinished: run the same command again to finish "
              f"them (finished cells are skipped, killed ones resume from their checkpoints, or run "
              f"again where the task writes none)",
              file=out, flush=True)
        return EXIT_SIGINT
    return EXIT_CELLS_FAILED if incomplete else EXIT_FINISHED
