"""The run lifecycle: one tracked run from start to FINISHED, FAILED or KILLED.

``start_run(cfg)`` is the whole contract a task relies on. On entry it creates (or adopts)
the MLflow run, records provenance, tags, params and ``config.yaml``, seeds everything and,
with ``--resume``, loads the checkpoint to continue from. On exit, however the block ends,
it flushes metrics, writes ``summary.json`` and ``REPORT.md``, uploads the log and sets the
terminal status: an exception is FAILED with its reason, Ctrl-C or SIGTERM is KILLED.
"""
from __future__ import annotations

import datetime as _dt
import getpass
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import yaml

from tracking import checkpoint as ckpt
from tracking import observers as _observers
from tracking import store
from tracking.components import ComponentResult, Provider, evaluate
from tracking.config import TaskConfig, fingerprint, flatten, group_key
from tracking.exits import EXIT_PRUNED, EXIT_SIGINT, EXIT_SIGTERM
from tracking.logs import RunLogging
from tracking.metrics import MetricLogger
from tracking.progress import epoch_line, progress
from tracking.provenance import GitInfo, environment, git_info
from tracking.seeding import resolve_device, seed_everything

log = logging.getLogger("labrun")

HEARTBEAT_S = 30.0
_PARAM_MAX = 6000  # MLflow's limit on a param value


class RunInterrupted(KeyboardInterrupt):
    """SIGTERM turned into an exception so the run can end KILLED instead of vanishing."""


class Run:
    """Handle a task uses inside ``with start_run(cfg) as run``."""

    def __init__(self, cfg: TaskConfig, run_id: str, experiment_id: str, client: Any,
                 local_dir: Path, git: GitInfo) -> None:
        self.cfg = cfg
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.client = client
        self.local_dir = local_dir
        self.git = git
        self.log = logging.getLogger(f"labrun.{cfg.task}")
        self.device = resolve_device(cfg.device)
        self.components: dict[str, ComponentResult] = {}
        self.results: dict[str, Any] = {}
        self.figures: list[str] = []
        self.tags: dict[str, str] = {}
        self.name = cfg.launch.name or run_id
        self.resume: ckpt.ResumeInfo | None = None
        self._resume_state: dict | None = None
        self._tracked: dict[str, Any] = {}
        self._checkpoints: list[str] = []
        self._artifacts: Any = None
        self.metrics = MetricLogger(client, run_id, fast_uri=store.tracking_uri())
        self.observers: list[_observers.RunObserver] = []

    # ------------------------------------------------------------------ metrics
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Hierarchical names (``loss.kl.z``) with an explicit step; batched, never lost."""
        self.metrics.log(metrics, step)

    def log_metric(self, name: str, value: float, step: int) -> None:
        self.metrics.log({name: value}, step)

    def set_direction(self, name: str, direction: str) -> None:
        """Which way is better for ``best`` in the summary (default: by name)."""
        self.metrics.set_direction(name, direction)

    def progress(self, iterable: Iterable, *, total: int | None = None, desc: str = "",
                 initial: int = 0) -> Iterable:
        return progress(iterable, total=total, desc=desc or self.cfg.task, initial=initial)

    def epoch_line(self, epoch: int, total: int, metrics: Mapping[str, float], elapsed_s: float,
                   keys: Iterable[str] | None = None) -> str:
        line = epoch_line(epoch, total, metrics, elapsed_s, keys)
        self.log.info(line)
        return line

    # ------------------------------------------------------------------ components, artifacts
    def component(self, name: str, provider: Provider) -> ComponentResult:
        """Record an optional part's status; a provider that raises becomes ``failed``."""
        result = evaluate(provider)
        if result.metrics:
            try:
                self.log_metrics(result.metrics, step=0)
            except ValueError as exc:
                result = ComponentResult.failed(exc)
        self.components[name] = result
        self.set_tag(f"labrun.component.{name}", result.status)
        level = logging.WARNING if result.status == "failed" else logging.INFO
        self.log.log(level, "component %s: %s%s", name, result.status,
                     f" ({result.reason})" if result.reason else "")
        return result

    def set_tag(self, key: str, value: Any) -> None:
        self.tags[key] = str(value)
        self.client.set_tag(self.run_id, key, str(value))

    def log_figure(self, figure: Any, name: str) -> str:
        """Save a matplotlib figure as PNG under ``figures/`` and close it; returns its path."""
        import matplotlib.pyplot as plt

        rel = name if name.startswith("figures/") else f"figures/{name}"
        if not rel.endswith(".png"):
            rel += ".png"
        path = self.local_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(figure)
        self.client.log_artifact(self.run_id, str(path), str(Path(rel).parent))
        self.figures.append(rel)
        return rel

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(local_path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        self.client.log_dict(self.run_id, dict(data), artifact_file)

    # ------------------------------------------------------------------ checkpoints
    def track_state(self, **objects: Any) -> ckpt.ResumeInfo | None:
        """Register what a checkpoint holds (model, optimizer, scheduler, data generator...).

        When this run resumes another, their saved state is loaded into these objects
        (RNGs included) and the returned info says which step to continue after.
        """
        self._tracked = dict(objects)
        if self._resume_state is None:
            return None
        ckpt.apply(self._resume_state, self._tracked)
        self._resume_state = None
        self.log.info("resumed from %s at global step %d (epoch %d)", self.resume.run_id,
                      self.resume.global_step, self.resume.epoch)
        return self.resume

    def should_checkpoint(self, global_step: int) -> bool:
        every = self.cfg.checkpoint.every
        return every > 0 and global_step > 0 and global_step % every == 0

    def save_checkpoint(self, global_step: int, *, epoch: int = 0,
                        extra: Mapping[str, Any] | None = None, best: bool = False) -> Path:
        """Save the tracked objects; upload at once so a killed run keeps it.

        Save *after* logging the step's metrics: a resume continues with ``global_step + 1``.
        Periodic files are ``checkpoints/cp_{step}.ptz`` (the newest ``checkpoint.keep``
        are kept); ``best=True`` writes ``checkpoints/best/best.ptz``, never pruned.
        """
        if not self._tracked:
            raise RuntimeError("call run.track_state(model=..., optimizer=...) before save_checkpoint")
        # The store must hold every metric up to this step: a resume copies that history.
        self.metrics.flush()
        state = ckpt.collect(self._tracked, global_step=global_step, epoch=epoch, extra=extra,
                             quantize_moments=self.cfg.checkpoint.quantize_moments)
        if best:
            path = ckpt.save(state, self.local_dir / "checkpoints" / "best" / "best.ptz")
            self.client.log_artifact(self.run_id, str(path), "checkpoints/best")
            return path
        path = ckpt.save(state, self.local_dir / "checkpoints" / ckpt.checkpoint_name(global_step))
        self.client.log_artifact(self.run_id, str(path), "checkpoints")
        self._checkpoints.append(path.name)
        self._prune_checkpoints()
        self._upload_log()  # a SIGKILL later still leaves the log up to here
        return path

    def _prune_checkpoints(self) -> None:
        keep = max(1, self.cfg.checkpoint.keep)
        while len(self._checkpoints) > keep:
            name = self._checkpoints.pop(0)
            (self.local_dir / "checkpoints" / name).unlink(missing_ok=True)
            try:
                from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

                if self._artifacts is None:  # one lookup per run, not per pruned file
                    uri = self.client.get_run(self.run_id).info.artifact_uri
                    self._artifacts = get_artifact_repository(uri)
                self._artifacts.delete_artifacts(f"checkpoints/{name}")
            except Exception as exc:  # some stores cannot delete: keep the file, say so once
                self.log.debug("could not prune checkpoint %s: %s", name, exc)

    # ------------------------------------------------------------------ internals
    def _upload_log(self) -> None:
        logfile = self.local_dir / "logs" / "train.log"
        if logfile.exists():
            self.client.log_artifact(self.run_id, str(logfile), "logs")

    def _notify_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for obs in self.observers:
            obs.metrics(self, metrics, step)


# ---------------------------------------------------------------------------- start_run

def _param_text(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text[:_PARAM_MAX]


def _create_or_adopt(client: Any, cfg: TaskConfig, experiment: str | None) -> tuple[str, str, bool]:
    """Adopt the run ``mlflow run`` (or a launcher) made, else create one, nested if asked."""
    import mlflow

    opts = cfg.launch
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if run_id:
        run = client.get_run(run_id)
        return run_id, run.info.experiment_id, True
    parent = os.environ.get("LABRUN_PARENT_RUN_ID")
    active = mlflow.active_run()
    if not parent and active is not None:
        parent = active.info.run_id
    name = (experiment or opts.experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME"))
    if os.environ.get("MLFLOW_EXPERIMENT_ID") and not name:
        exp_id = os.environ["MLFLOW_EXPERIMENT_ID"]
    elif parent and not name:
        exp_id = client.get_run(parent).info.experiment_id
    else:
        exp_id = store.experiment_id(name or cfg.task)
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": " ".join(sys.argv[:1]) or "python",
            "mlflow.user": getpass.getuser()}
    if parent:
        tags["mlflow.parentRunId"] = parent
    run = client.create_run(exp_id, tags=tags, run_name=opts.name)
    return run.info.run_id, exp_id, False


def _header(cfg: TaskConfig, run: Run, resumed_epoch: int | None) -> dict:
    opts = cfg.launch
    return {
        "name": run.name,
        "description": opts.description,
        "tags": {k: v for k, v in sorted(run.tags.items())
                 if k not in ("labrun.heartbeat", "labrun.pid")},
        "status": opts.status,
        "run_id": run.run_id,
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": run.git.commit,
        "git_dirty": run.git.dirty,
        "base_config": opts.base_config,
        "cli_overrides": list(opts.overrides),
        "resumed_from": opts.resume,
        "resumed_epoch": resumed_epoch,
    }


def _load_resume(run: Run, source_run: str) -> None:
    """Download the source run's checkpoints, keep the newest valid one, copy its history."""
    dest = run.local_dir / "resume"
    try:
        run.client.download_artifacts(source_run, "checkpoints", str(dest))
    except Exception as exc:
        raise ckpt.CheckpointError(f"run {source_run} has no checkpoints to resume from ({exc})") from None
    found = ckpt.latest_valid(dest / "checkpoints")
    if found is None:
        raise ckpt.CheckpointError(f"run {source_run} has no valid checkpoint to resume from")
    path, state = found
    run.resume = ckpt.ResumeInfo(run_id=source_run, path=path.name, global_step=state["global_step"],
                                 epoch=state["epoch"], extra=state["extra"])
    run._resume_state = state
    # The continued run carries the whole series, so it reads like an uninterrupted one.
    source = run.client.get_run(source_run)
    for key in source.data.metrics:
        history = [m for m in run.client.get_metric_history(source_run, key)
                   if m.step <= run.resume.global_step]
        for m in sorted(history, key=lambda m: (m.step, m.timestamp)):
            run.metrics.log({key: m.value}, m.step, timestamp_ms=m.timestamp)
    shutil.rmtree(dest, ignore_errors=True)


def _heartbeat(run: Run, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        try:
            run.client.set_tag(run.run_id, "labrun.heartbeat", f"{time.time():.0f}")
        except Exception:
            pass


@contextmanager
def start_run(cfg: TaskConfig, *, experiment: str | None = None) -> Iterator[Run]:
    """Run one task under tracking; see the module docstring for what happens when."""
    store.quiet_environment()
    import mlflow

    t0 = time.time()
    client = store.client()
    run_id, exp_id, adopted = _create_or_adopt(client, cfg, experiment)
    local_dir = Path(tempfile.mkdtemp(prefix=f"labrun-{run_id[:8]}-"))
    # Provenance of the code that runs (the schema's module), not of the working directory.
    git = git_info(Path(sys.modules[type(cfg).__module__].__file__).resolve().parent)
    run = Run(cfg, run_id, exp_id, client, local_dir, git)
    logging_ = RunLogging(local_dir / "logs" / "train.log")
    opts = cfg.launch
    outcome, failure, exit_code, pending = "FINISHED", None, 0, None
    stop_beat = threading.Event()
    old_term = None
    in_main = threading.current_thread() is threading.main_thread()
    try:
        if in_main:
            def _on_term(signum, frame):
                raise RunInterrupted(f"signal {signal.Signals(signum).name}")

            old_term = signal.signal(signal.SIGTERM, _on_term)
        if mlflow.active_run() is None or mlflow.active_run().info.run_id != run_id:
            mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None)
        _record_start(run, cfg, adopted)
        if opts.resume:
            _load_resume(run, opts.resume)
            run.set_tag("labrun.resumed_step", run.resume.global_step)
        header = _header(cfg, run, run.resume.epoch if run.resume else None)
        doc = {"experiment": header, "config": cfg.model_dump(mode="json")}
        run.log_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), "config.yaml")
        seed_everything(cfg.seed, cfg.deterministic)
        run.observers = _observers.from_environment()
        run.metrics.listeners.append(run._notify_metrics)
        for obs in run.observers:
            obs.started(run)
        threading.Thread(target=_heartbeat, args=(run, stop_beat), daemon=True).start()
        log.info("run %s started: task=%s method=%s seed=%s experiment=%s", run_id, cfg.task,
                 cfg.method_tag, cfg.seed, exp_id)
        yield run
    except _observers.Pruned as exc:
        outcome, exit_code = "KILLED", EXIT_PRUNED
        run.tags["labrun.pruned"] = "true"
        log.info("run %s pruned: %s", run_id, exc)
    except RunInterrupted as exc:
        outcome, exit_code, failure = "KILLED", EXIT_SIGTERM, f"Interrupted: {exc}"
    except KeyboardInterrupt:
        outcome, exit_code, failure = "KILLED", EXIT_SIGINT, "Interrupted: KeyboardInterrupt"
    except SystemExit as exc:
        if exc.code not in (0, None):
            outcome, failure, pending = "FAILED", f"SystemExit: {exc.code}", exc
        else:
            pending = exc
    except BaseException as exc:
        outcome, failure, pending = "FAILED", f"{type(exc).__name__}: {exc}", exc
    finally:
        stop_beat.set()
        _finish(run, cfg, outcome, failure, pending, t0, logging_)
        if in_main and old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    if pending is not None:
        raise pending
    if outcome == "KILLED":
        if exit_code != EXIT_PRUNED:
            print(f"labrun: run {run_id} KILLED ({failure}); continue it with --resume {run_id}",
                  file=sys.stderr)
        raise SystemExit(exit_code)


def _record_start(run: Run, cfg: TaskConfig, adopted: bool) -> None:
    from mlflow.entities import Param, RunTag

    opts = cfg.launch
    existing = run.client.get_run(run.run_id)
    run.name = opts.name or existing.info.run_name or run.run_id
    tags = {
        "labrun.task": cfg.task,
        "labrun.method": cfg.method_tag,
        "labrun.seed": str(cfg.seed),
        "labrun.condition": cfg.condition,
        "labrun.status": opts.status,
        "labrun.fingerprint": fingerprint(cfg),
        "labrun.group": group_key(cfg),
        "labrun.git.commit": run.git.commit,
        "labrun.git.dirty": run.git.dirty,
        "labrun.git.branch": run.git.branch,
        "labrun.git.remote": run.git.remote,
        "labrun.host": socket.gethostname(),
        "labrun.pid": str(os.getpid()),
        "labrun.heartbeat": f"{time.time():.0f}",
        "labrun.device": str(run.device),
        **({"labrun.resumed_from": opts.resume} if opts.resume else {}),
        **({"mlflow.note.content": opts.description} if opts.description else {}),
        **({"mlflow.runName": opts.name} if opts.name and not adopted else {}),
        **opts.tags,
    }
    if run.git.commit != "unknown" and "mlflow.source.git.commit" not in existing.data.tags:
        tags["mlflow.source.git.commit"] = run.git.commit
    run.tags.update(tags)
    # `mlflow run` already logged the -P values as strings: logging them again with another
    # spelling ("1e-3" vs "0.001") would fail, so keys it owns are left as they are.
    params = [Param(k, _param_text(v)) for k, v in flatten(cfg.model_dump(mode="json")).items()
              if k not in existing.data.params]
    tag_rows = [RunTag(k, v) for k, v in tags.items()]
    for i in range(0, max(len(params), len(tag_rows)), 100):
        run.client.log_batch(run.run_id, params=params[i:i + 100], tags=tag_rows[i:i + 100])
    if run.git.dirty == "true":
        run.log_text(run.git.diff_text(), "git.diff")
    run.log_dict(environment(str(run.device)), "environment.json")


def _finish(run: Run, cfg: TaskConfig, outcome: str, failure: str | None,
            exc: BaseException | None, t0: float, logging_: RunLogging) -> None:
    """Everything that must happen however the run ended; each step guarded on its own."""
    import mlflow

    def guarded(what: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as err:  # one broken step must not cost the rest (or the status)
            print(f"labrun: could not {what} for run {run.run_id}: {err}", file=sys.stderr)

    guarded("flush metrics", run.metrics.close)
    if failure:
        run.tags["labrun.failure"] = failure
        guarded("tag the failure", run.client.set_tag, run.run_id, "labrun.failure", failure[:5000])
        log.error("run %s %s: %s", run.run_id, outcome, failure)
    if outcome == "FAILED":
        run.tags["labrun.status"] = "failed"
        guarded("set the research status", run.client.set_tag, run.run_id, "labrun.status", "failed")
        if exc is not None:
            tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            guarded("upload the traceback", run.log_text, tb, "traceback.txt")
    if run.tags.get("labrun.pruned"):
        guarded("tag the pruning", run.client.set_tag, run.run_id, "labrun.pruned", "true")
    summary = {
        "run_id": run.run_id,
        "name": run.name,
        "description": cfg.launch.description,
        "task": cfg.task,
        "outcome": outcome,
        "failure": failure,
        "tags": {k: v for k, v in sorted(run.tags.items()) if k.startswith("labrun.")},
        "git": {"commit": run.git.commit, "branch": run.git.branch, "dirty": run.git.dirty},
        "base_config": cfg.launch.base_config,
        "cli_overrides": list(cfg.launch.overrides),
        "resumed_from": cfg.launch.resume,
        "resumed_step": run.resume.global_step if run.resume else None,
        "duration_s": time.time() - t0,
        "training": run.metrics.summary(),
        "components": {k: v.as_dict() for k, v in run.components.items()},
        "results": run.results,
        "figures": run.figures,
        "checkpoints": list(run._checkpoints),
    }
    from tracking.report import report_markdown, summary_json

    guarded("write summary.json", run.log_text, summary_json(summary), "summary.json")
    guarded("write REPORT.md", lambda: run.log_text(report_markdown(json.loads(summary_json(summary))),
                                                     "REPORT.md"))
    logging_.flush()
    guarded("upload logs/train.log", run._upload_log)
    logging_.close()
    for obs in run.observers:
        guarded("notify an observer", obs.completed, run, outcome)
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run.run_id:
        guarded("end the run", mlflow.end_run, outcome)
    else:
        guarded("end the run", run.client.set_terminated, run.run_id, outcome)
    shutil.rmtree(run.local_dir, ignore_errors=True)


def set_research_status(run_id: str, status: str) -> None:
    """``labrun status RUN_ID keep``: research status can change after the run ended."""
    from tracking.config import RESEARCH_STATUSES, ConfigError

    if status not in RESEARCH_STATUSES:
        raise ConfigError(f"unknown status {status!r}; valid: {', '.join(RESEARCH_STATUSES)}")
    c = store.client()
    try:
        c.get_run(run_id)
    except Exception:
        raise ConfigError(f"no run {run_id!r} in the tracking store {store.tracking_uri()}") from None
    c.set_tag(run_id, "labrun.status", status)


__all__ = ["Run", "RunInterrupted", "start_run", "set_research_status"]
