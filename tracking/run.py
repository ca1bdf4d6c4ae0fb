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
import math
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import yaml

from tracking import checkpoint as ckpt
from tracking import naming as _naming
from tracking import env
from tracking import observers as _observers
from tracking import store
from tracking import tags as T
from tracking.components import ComponentResult, Components, Provider, evaluate
from tracking.config import TaskConfig, fingerprint, flatten, group_key
from tracking.exits import EXIT_FAILED, EXIT_FINISHED, EXIT_PRUNED, EXIT_SIGINT, EXIT_SIGTERM
from tracking.logs import RunLogging
from tracking.loop import Steps
from tracking.metrics import MetricLogger
from tracking.progress import epoch_line, progress
from tracking.provenance import GitInfo, environment, git_info
from tracking.seeding import resolve_device, seed_everything

log = logging.getLogger("labrun")

HEARTBEAT_S = 30.0
SAVED_AT_KEY = "saved_at_ms"  # in a checkpoint's ``extra``: the wall-clock ms of the save
_PARAM_MAX = 6000  # MLflow's limit on a param value


class NonFinite(RuntimeError):
    """A watched training metric became NaN or infinite: the run ends FAILED at that step
    (``divergence.on_nonfinite=fail``) with its last good checkpoint, not FINISHED with a
    ``nan`` that analysis would read as a result."""


class RunInterrupted(KeyboardInterrupt):
    """SIGTERM turned into an exception so the run can end KILLED instead of vanishing."""


class Run:
    """Handle a task uses inside ``with start_run(cfg) as run``.

    The object owns the whole lifecycle of its MLflow run: :meth:`_begin` records it,
    :meth:`_finish` ends it however the ``with`` block ended, and nothing outside the class
    touches its resume state or checkpoint list.
    """

    def __init__(self, cfg: TaskConfig, run_id: str, experiment_id: str, client: Any) -> None:
        self.cfg = cfg
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.client = client
        self.local_dir = Path(tempfile.mkdtemp(prefix=f"labrun-{run_id[:8]}-"))
        self._logging = RunLogging(self.local_dir / "logs" / "train.log")
        # Provenance of the code that runs (the schema's module), not of the working directory.
        self.git: GitInfo = git_info(Path(sys.modules[type(cfg).__module__].__file__).resolve().parent)
        self.log = logging.getLogger(f"labrun.{cfg.task}")
        self.device = resolve_device(cfg.device)
        self.components: dict[str, ComponentResult] = {}
        self.results: dict[str, Any] = {}
        self.figures: list[str] = []
        self.datasets: list[dict[str, Any]] = []
        self.models: dict[str, ComponentResult] = {}
        self.tags: dict[str, str] = {}
        self.name = cfg.launch.name or run_id
        self.resume: ckpt.ResumeInfo | None = None
        self._resume_state: dict | None = None
        self._tracked: dict[str, Any] = {}
        self._checkpoints: list[str] = []
        self._artifacts: Any = None
        self._t0 = time.time()
        self._stop_beat = threading.Event()
        self._ckpt_writer: Any = None   # built by the first save_checkpoint
        self._ckpt_pool: Any = None
        self._snapshot = cfg.checkpoint.snapshot  # "copy" after a torn deferred snapshot
        self._sysmetrics: Any = None    # started in _begin
        self._loop: Steps | None = None  # the task's run.steps(...), stopped on divergence
        self._watched = tuple(cfg.divergence.metrics if cfg.divergence.metrics is not None
                              else type(cfg).nonfinite_metrics)
        self.metrics = MetricLogger(client, run_id, fast_uri=store.tracking_uri())
        self.observers: list[_observers.RunObserver] = []

    # ------------------------------------------------------------------ metrics
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Hierarchical names (``loss.kl.z``) with an explicit step; batched, never lost.

        A watched metric (``divergence.metrics``) that is not finite ends the run here, after
        it is logged and before the step's checkpoint (see :meth:`_diverged`)."""
        self.metrics.log(metrics, step)
        for name in self._watched:
            value = metrics.get(name)
            if value is not None and not math.isfinite(value):
                self._diverged(name, value, step)
                return

    def log_metric(self, name: str, value: float, step: int) -> None:
        self.log_metrics({name: value}, step)

    def _diverged(self, name: str, value: float, step: int) -> None:
        what = f"{name} is {value} at step {step}"
        if self.cfg.divergence.on_nonfinite == "fail":
            raise NonFinite(f"{what}; the last good checkpoint is kept (to record divergence as a "
                            f"result instead: --set divergence.on_nonfinite=record)")
        if T.DIVERGED in self.tags:
            return
        self.set_tag(T.DIVERGED, step)
        self.log.warning("diverged: %s; training stops here and the run finishes (divergence.on_nonfinite"
                         "=record)", what)
        if self._loop is not None:
            self._loop.stop(f"diverged: {what}")

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
        self._note_status("component", name, T.component(name), result)
        return result

    def _note_status(self, what: str, name: str, tag: str, result: ComponentResult) -> None:
        """The tag and the log line every component or model status gets."""
        self.set_tag(tag, result.status)
        level = logging.WARNING if result.status == "failed" else logging.INFO
        self.log.log(level, "%s %s: %s%s", what, name, result.status,
                     f" ({result.reason})" if result.reason else "")

    def report_components(self, components: Components, ctx: Any) -> None:
        """Every provider of a task's :class:`Components`, in order, gates first."""
        for name in components.names:
            self.component(name, components.resolve(name, self.cfg, ctx))

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

    # ------------------------------------------------------------------ MLflow 3 inputs and models
    def log_dataset(self, features: Any, *, name: str, split: str, targets: Any = None,
                    source: str | None = None) -> str:
        """Record a dataset the run reads (``mlflow.log_input``): name, source, digest, split.

        ``features``/``targets``: numpy, torch or pandas (then ``targets`` is a column name);
        ``source`` a path or URI, else the task's module is named as the code that made it.
        Returns the digest, which also goes to ``summary.json`` and ``REPORT.md``.
        """
        from tracking.datasets import log_dataset, make_dataset

        ds = make_dataset(features, name=name, targets=targets, source=source,
                          code=type(self.cfg).__module__)
        digest = log_dataset(self.client, self.run_id, ds, split)
        self.datasets.append({"name": name, "split": split, "digest": digest,
                              "rows": int(getattr(features, "shape", [len(features)])[0])})
        return digest

    def log_model(self, model: Any, input_example: Any, *, name: str = "model") -> ComponentResult:
        """Log the trained torch model as an MLflow model (signature + input example), and
        register it when the run was started with ``--register-model NAME``.

        Its status (success / disabled with how to enable / failed) goes to ``summary.json``'s
        ``models``, ``REPORT.md`` and tag ``labrun.model`` (``labrun.model.<name>``), apart from the task's own
        components: a model that cannot be logged fails that entry, not the run that trained it.
        """
        from tracking.models import AUTO_AFTER_S, log_torch_model, single_input_reason

        register, mode = self.cfg.launch.register_model, self.cfg.launch.log_model
        elapsed = time.time() - self._t0

        def provide() -> ComponentResult:
            if mode == "off" or (mode == "auto" and not register and elapsed < AUTO_AFTER_S):
                why = "--log-model off" if mode == "off" else \
                    f"the run took {elapsed:.0f} s < {AUTO_AFTER_S:.0f} s (--log-model auto)"
                return ComponentResult.disabled(why, "--log-model on")
            several = single_input_reason(model)
            if several:
                return ComponentResult.disabled(several, "wrap it in a module whose forward takes one tensor")
            info = log_torch_model(model, input_example, name=name, registered_model_name=register)
            return ComponentResult.success({
                "model_uri": info.model_uri, "model_id": getattr(info, "model_id", None),
                "registered_as": register, "load_with": f"mlflow.pytorch.load_model({info.model_uri!r})"})
        result = evaluate(provide)
        self.models[name] = result
        self._note_status("model", name, T.MODEL if name == "model" else f"{T.MODEL}.{name}", result)
        return result

    # ------------------------------------------------------------------ checkpoints
    def track_state(self, **objects: Any) -> ckpt.ResumeInfo | None:
        """Register what a checkpoint holds: model, optimizer, scheduler, data generators,
        and the trainer's own state (a :class:`~tracking.loop.TrainerState`).

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

    @property
    def tracked(self) -> Mapping[str, Any]:
        return dict(self._tracked)

    def steps(self, total: int, *, desc: str = "", unit: str = "step") -> Steps:
        """The training loop: ``start..total`` after a resume, checkpointing after logging."""
        self._loop = Steps(self, total, desc=desc, unit=unit)
        return self._loop

    def should_checkpoint(self, global_step: int) -> bool:
        every = self.cfg.checkpoint.every
        return every > 0 and global_step > 0 and global_step % every == 0

    def save_checkpoint(self, global_step: int, *, epoch: int = 0,
                        extra: Mapping[str, Any] | None = None, best: bool = False) -> Path:
        """Snapshot the tracked objects and return; a background thread writes and uploads.

        RNGs, samplers and small tensors are captured before this returns; the big tensors
        are copied on :class:`~tracking.writer.CheckpointWriter`'s thread, and the loop waits
        for that copy only at its next ``optimizer.step()`` (or another settling point of
        :class:`tracking.checkpoint.Deferred`; ``checkpoint.snapshot=copy`` copies everything
        here), so nothing after the call changes what is saved. The compression, checksum,
        atomic write and upload run on the writer's thread too. At most one save is in
        flight: a new one first waits for the previous (why waiting and not coalescing: see
        :mod:`tracking.writer`). The run ends (FINISHED, FAILED or KILLED) only once the
        in-flight file is complete and uploaded, or, after a second Ctrl-C, absent.

        Save *after* logging the step's metrics: a resume continues with ``global_step + 1``
        (``run.steps`` does this for you). Periodic files are ``checkpoints/cp_{step}.ptz``
        (the newest ``checkpoint.keep`` are kept); ``best=True`` writes
        ``checkpoints/best/best.ptz``, never pruned. ``extra`` is the loop's own state.
        Returns the local path the file will have once written.
        """
        if not self._tracked:
            raise RuntimeError("call run.track_state(model=..., optimizer=...) before save_checkpoint")
        # When the state was taken: a resume copies only the history logged before it (what a
        # task logs after its loop, e.g. final diagnostics at step 0, is logged again anyway).
        extra = {**(extra or {}), SAVED_AT_KEY: int(time.time() * 1000)}
        writer = self._checkpoint_writer()
        writer.wait()  # one snapshot in memory at a time; its buffers are reused
        deferred = self._snapshot == "deferred"  # ckpt.Deferred
        state = ckpt.snapshot(ckpt.collect(self._tracked, global_step=global_step, epoch=epoch, extra=extra),
                              self._ckpt_pool, defer=self._tracked if deferred else None)
        folder = self.local_dir / "checkpoints"
        path = folder / "best" / "best.ptz" if best else folder / ckpt.checkpoint_name(global_step)
        writer.submit(lambda cancel: self._write_checkpoint(state, path, best, cancel))
        return path

    def _snapshot_torn(self, path: Path, exc: Exception) -> None:
        """The loop changed a deferred tensor before its next step: that file cannot be
        written, but failing a long run for it would throw away the training itself. The run
        goes on with full copies, and says so in the log and a tag."""
        self._snapshot = "copy"
        log.warning("labrun: checkpoint %s skipped: %s; this run's later saves use "
                    "checkpoint.snapshot=copy (set it in the config to avoid the miss)", path.name, exc)
        self.set_tag(T.CHECKPOINT_TORN, f"{path.name}: {exc}"[:5000])

    def _checkpoint_writer(self) -> Any:
        if self._ckpt_writer is None:
            from tracking.writer import CheckpointWriter

            self._ckpt_writer = CheckpointWriter(f"labrun-checkpoint-{self.run_id[:8]}")
            self._ckpt_pool = ckpt.SnapshotPool()
        return self._ckpt_writer

    def _write_checkpoint(self, state: dict, path: Path, best: bool, cancel: threading.Event) -> None:
        """On the writer thread: quantize (if asked), write atomically, then make it visible."""
        snap = state
        if self.cfg.checkpoint.quantize_moments:
            state = ckpt.quantize_state(state)
        try:
            ckpt.save(state, path, cancel=cancel)
        except ckpt.SnapshotTorn as exc:
            self._ckpt_pool.give(snap)  # no file; the next (full) copy reuses these buffers
            self._snapshot_torn(path, exc)
            return
        del state
        self._ckpt_pool.give(snap)  # written: the next snapshot may overwrite these buffers
        # The store must hold every metric up to this step before the file is visible: a
        # resume copies that history.
        self.metrics.flush()
        if cancel.is_set():
            path.unlink(missing_ok=True)
            raise ckpt.SaveCancelled("cancelled before upload")
        self.client.log_artifact(self.run_id, str(path), "checkpoints/best" if best else "checkpoints")
        if best:
            return
        self._checkpoints.append(path.name)
        self._prune_checkpoints()
        self._upload_log()  # a SIGKILL later still leaves the log up to here

    def _prune_checkpoints(self) -> None:
        """Keep the newest ``checkpoint.keep`` files; a store that cannot delete keeps them
        (``tracking.backends.delete_artifact`` logs each refusal at debug level)."""
        from tracking import backends

        keep = max(1, self.cfg.checkpoint.keep)
        while len(self._checkpoints) > keep:
            name = self._checkpoints.pop(0)
            (self.local_dir / "checkpoints" / name).unlink(missing_ok=True)
            if self._artifacts is None:  # one lookup per run, not per pruned file
                self._artifacts = self.client.get_run(self.run_id).info.artifact_uri
            backends.delete_artifact(self._artifacts, f"checkpoints/{name}")

    # ------------------------------------------------------------------ lifecycle
    def _begin(self, adopted: bool, observers: Sequence[_observers.RunObserver]) -> None:
        """Everything between the MLflow run existing and the task's first line."""
        import mlflow

        active = mlflow.active_run()
        if active is None or active.info.run_id != self.run_id:
            mlflow.start_run(run_id=self.run_id, nested=active is not None)
        from tracking.sysmetrics import SystemMetrics

        self._sysmetrics = SystemMetrics(self.run_id, self.cfg.launch.system_metrics)
        self._sysmetrics.start()
        self._record_start(adopted)
        self._close_stale_twins()
        if self.cfg.launch.resume:
            self._load_resume(self.cfg.launch.resume)
            self.set_tag(T.RESUMED_STEP, self.resume.global_step)
        doc = {"experiment": self._header(), "config": self.cfg.model_dump(mode="json")}
        self.log_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), "config.yaml")
        seed_everything(self.cfg.seed, self.cfg.deterministic)
        self.observers = [*observers, *_observers.from_environment()]
        self.metrics.listeners.append(self._notify_metrics)
        for obs in self.observers:
            obs.started(self)
        threading.Thread(target=self._heartbeat, daemon=True).start()
        log.info("run %s started: task=%s method=%s seed=%s experiment=%s", self.run_id,
                 self.cfg.task, self.cfg.method_tag, self.cfg.seed, self.experiment_id)

    def _record_start(self, adopted: bool) -> None:
        from mlflow.entities import Param, RunTag

        opts, cfg = self.cfg.launch, self.cfg
        existing = self.client.get_run(self.run_id)
        self.name = opts.name or existing.info.run_name or self.run_id
        renamed = adopted and not opts.name and _naming.is_generated(existing.info.run_name)
        if renamed:  # `mlflow run` without --run-name gave it "classy-wolf-669"
            self.name = _naming.run_name(self.client, cfg)
        tags = {**_identity_tags(cfg), **_provenance_tags(self),
                **({T.RESUMED_FROM: opts.resume} if opts.resume else {}),
                **({"mlflow.note.content": opts.description} if opts.description else {}),
                **({"mlflow.runName": opts.name} if opts.name and not adopted else {}),
                **({"mlflow.runName": self.name} if renamed else {}),
                **opts.tags}
        if self.git.commit != "unknown" and "mlflow.source.git.commit" not in existing.data.tags:
            tags["mlflow.source.git.commit"] = self.git.commit
        self.tags.update(tags)
        # `mlflow run` already logged the -P values as strings: logging them again with another
        # spelling ("1e-3" vs "0.001") would fail, so keys it owns are left as they are.
        params = [Param(k, _param_text(v)) for k, v in flatten(cfg.model_dump(mode="json")).items()
                  if k not in existing.data.params]
        tag_rows = [RunTag(k, v) for k, v in tags.items()]
        for i in range(0, max(len(params), len(tag_rows)), 100):
            self.client.log_batch(self.run_id, params=params[i:i + 100], tags=tag_rows[i:i + 100])
        if self.git.dirty == "true":
            self.log_text(self.git.diff_text(), "git.diff")
        self.log_dict(environment(str(self.device), type(cfg).packages), "environment.json")

    def _close_stale_twins(self) -> None:
        """Earlier runs of this very config left RUNNING by a SIGKILL end KILLED now, so no
        run reads as running forever (a sweep's ledger does the same for its cells)."""
        fp = self.tags.get(T.FINGERPRINT)
        try:
            found = self.client.search_runs([self.experiment_id], filter_string=(
                f"tags.`{T.FINGERPRINT}` = '{fp}' and attributes.status = 'RUNNING'"), max_results=100)
        except Exception:
            return
        for other in found:
            if other.info.run_id != self.run_id:
                store.close_if_stale(self.client, other.info.run_id)

    def _header(self) -> dict:
        opts = self.cfg.launch
        return {
            "name": self.name,
            "description": opts.description,
            "tags": {k: v for k, v in sorted(self.tags.items()) if k not in T.VOLATILE},
            "status": opts.status,
            "run_id": self.run_id,
            "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "git_commit": self.git.commit,
            "git_dirty": self.git.dirty,
            "base_config": opts.base_config,
            "cli_overrides": list(opts.overrides),
            "resumed_from": opts.resume,
            "resumed_epoch": self.resume.epoch if self.resume else None,
        }

    def _load_resume(self, source_run: str) -> None:
        """Download the source run's checkpoints, keep the newest valid one, copy its history."""
        dest = self.local_dir / "resume"
        try:
            self.client.download_artifacts(source_run, "checkpoints", str(dest))
        except Exception as exc:
            raise ckpt.CheckpointError(f"run {source_run} has no checkpoints to resume from ({exc})") from None
        found = ckpt.latest_valid(dest / "checkpoints")
        if found is None:
            raise ckpt.CheckpointError(f"run {source_run} has no valid checkpoint to resume from")
        path, state = found
        store.close_if_stale(self.client, source_run)  # a SIGKILLed source must not stay RUNNING
        self.resume = ckpt.ResumeInfo(run_id=source_run, path=path.name, global_step=state["global_step"],
                                      epoch=state["epoch"], extra=state["extra"])
        self._resume_state = state
        from tracking.metrics import recover

        recover(self.client, source_run, fast_uri=store.tracking_uri())  # what a SIGKILL left unflushed
        self._copy_history(source_run, self.resume.global_step)
        shutil.rmtree(dest, ignore_errors=True)

    def _copy_history(self, source_run: str, until_step: int) -> None:
        """The continued run carries the whole series, so it reads like an uninterrupted one."""
        source = self.client.get_run(source_run)
        saved_at = (self.resume.extra or {}).get(SAVED_AT_KEY) if self.resume else None
        for key in source.data.metrics:
            history = [m for m in self.client.get_metric_history(source_run, key)
                       if m.step <= until_step and (saved_at is None or m.timestamp <= saved_at)]
            for m in sorted(history, key=lambda m: (m.step, m.timestamp)):
                self.metrics.log({key: m.value}, m.step, timestamp_ms=m.timestamp)

    def _heartbeat(self) -> None:
        while not self._stop_beat.wait(HEARTBEAT_S):
            try:
                self.client.set_tag(self.run_id, T.HEARTBEAT, f"{time.time():.0f}")
            except Exception:
                pass

    def _finish(self, end: "_Outcome") -> None:
        """Everything that must happen however the run ended; each step guarded on its own."""
        self._stop_beat.set()
        guarded = _guard(self.run_id)
        if self._sysmetrics is not None:
            guarded("stop the system metrics", self._sysmetrics.stop)
        self._complete_checkpoint(end)
        guarded("flush metrics", self.metrics.close)
        _record_outcome(self.client, self.run_id, end, guarded, self.tags)
        from tracking.report import report_html, report_markdown, summary_json

        text = summary_json(self._summary(end))
        guarded("write summary.json", self.log_text, text, "summary.json")
        md = guarded("render REPORT.md", report_markdown, json.loads(text))
        if md is not None:  # rendered once, written as Markdown and as HTML with the figures
            guarded("write REPORT.md", self.log_text, md, "REPORT.md")
            guarded("write REPORT.html", lambda: self.log_text(report_html(md, self.local_dir), "REPORT.html"))
        self._logging.flush()
        guarded("upload logs/train.log", self._upload_log)
        self._logging.close()
        for obs in self.observers:
            guarded("notify an observer", obs.completed, self, end.status)
        _end_mlflow_run(self.client, self.run_id, end.status, guarded)
        shutil.rmtree(self.local_dir, ignore_errors=True)

    def _complete_checkpoint(self, end: "_Outcome") -> None:
        """Before the run ends: the in-flight checkpoint completes (a second Ctrl-C
        discards it instead). A save that failed fails a run that would have finished."""
        writer = self._ckpt_writer
        if writer is None:
            return
        try:
            writer.close()
        except Exception as err:
            print(f"labrun: could not complete the in-flight checkpoint for run {self.run_id}: {err}",
                  file=sys.stderr)
            if end.status == "FINISHED" and end.exc is None:
                end.status, end.failure, end.exit_code, end.exc = "FAILED", f"{type(err).__name__}: {err}", \
                    EXIT_FAILED, err

    def _summary(self, end: "_Outcome") -> dict[str, Any]:
        opts = self.cfg.launch
        return {
            "run_id": self.run_id,
            "name": self.name,
            "description": opts.description,
            "task": self.cfg.task,
            "outcome": end.status,
            "failure": end.failure,
            "tags": {k: v for k, v in sorted(self.tags.items()) if k.startswith(T.PREFIX)},
            "git": {"commit": self.git.commit, "branch": self.git.branch, "dirty": self.git.dirty},
            "base_config": opts.base_config,
            "cli_overrides": list(opts.overrides),
            "resumed_from": opts.resume,
            "resumed_step": self.resume.global_step if self.resume else None,
            "duration_s": time.time() - self._t0,
            "training": self.metrics.summary(),
            "components": {k: v.as_dict() for k, v in self.components.items()},
            "results": self.results,
            "figures": self.figures,
            "datasets": self.datasets,
            "models": {k: v.as_dict() for k, v in self.models.items()},
            "checkpoints": list(self._checkpoints),
        }

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


def _identity_tags(cfg: TaskConfig) -> dict[str, str]:
    """What the run is: the tags analysis groups and filters by."""
    return {T.TASK: cfg.task, T.METHOD: cfg.method_tag, T.SEED: str(cfg.seed),
            T.CONDITION: cfg.condition, T.STATUS: cfg.launch.status,
            T.FINGERPRINT: fingerprint(cfg), T.GROUP: group_key(cfg)}


def _provenance_tags(run: Run) -> dict[str, str]:
    """Where it ran: code, host, process (the last two let sweeps spot a dead run)."""
    return {T.GIT_COMMIT: run.git.commit, T.GIT_DIRTY: run.git.dirty, T.GIT_BRANCH: run.git.branch,
            T.GIT_REMOTE: run.git.remote, T.HOST: socket.gethostname(), T.PID: str(os.getpid()),
            T.HEARTBEAT: f"{time.time():.0f}", T.DEVICE: str(run.device)}


def _create_or_adopt(client: Any, cfg: TaskConfig, experiment: str | None) -> tuple[str, str, bool]:
    """Adopt the run ``mlflow run`` (or a launcher) made, else create one, nested if asked."""
    import mlflow

    opts = cfg.launch
    run_id = env.MLFLOW_RUN_ID.get()
    if run_id:
        run = client.get_run(run_id)
        store.mark_experiment(run.info.experiment_id, c=client)
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
    tags = {"mlflow.source.type": "LOCAL", "mlflow.source.name": " ".join(sys.argv[:1]) or "python",
            "mlflow.user": getpass.getuser()}
    if parent:
        tags["mlflow.parentRunId"] = parent
    run = client.create_run(exp_id, tags=tags, run_name=opts.name or _naming.run_name(client, cfg))
    return run.info.run_id, exp_id, False


@dataclass
class _Outcome:
    """How the ``with`` block ended: the MLflow status, the process exit code, and the
    exception to re-raise once the run is closed (a SystemExit or a task's error)."""

    status: str = "FINISHED"
    failure: str | None = None
    exit_code: int = EXIT_FINISHED
    exc: BaseException | None = None
    pruned: bool = False

    @classmethod
    def of(cls, exc: BaseException) -> "_Outcome":
        if isinstance(exc, _observers.Pruned):
            return cls("KILLED", exit_code=EXIT_PRUNED, pruned=True)
        if isinstance(exc, RunInterrupted):
            return cls("KILLED", f"Interrupted: {exc}", EXIT_SIGTERM)
        if isinstance(exc, KeyboardInterrupt):
            return cls("KILLED", "Interrupted: KeyboardInterrupt", EXIT_SIGINT)
        if isinstance(exc, SystemExit) and exc.code in (0, None):
            return cls(exc=exc)
        if isinstance(exc, SystemExit):
            return cls("FAILED", f"SystemExit: {exc.code}", EXIT_FAILED, exc)
        return cls("FAILED", f"{type(exc).__name__}: {exc}", EXIT_FAILED, exc)

    def settle(self, run_id: str) -> None:
        """After the run is closed: re-raise the task's exception, or exit as a killed run does."""
        if isinstance(self.exc, NonFinite):  # an outcome, not a bug: one line, no traceback
            print(f"labrun: run {run_id} FAILED ({self.failure})", file=sys.stderr)
            raise SystemExit(self.exit_code)
        if self.exc is not None:
            raise self.exc
        if self.status == "KILLED":
            if not self.pruned:
                print(f"labrun: run {run_id} KILLED ({self.failure}); continue it with --resume {run_id}",
                      file=sys.stderr)
            raise SystemExit(self.exit_code)


def _guard(run_id: str) -> Callable[..., Any]:
    def guarded(what: str, fn: Callable, *args: Any) -> Any:
        """``fn(*args)``, or None (with one line on stderr) when it raises."""
        try:
            return fn(*args)
        except Exception as err:  # one broken step must not cost the rest (or the status)
            print(f"labrun: could not {what} for run {run_id}: {err}", file=sys.stderr)
            return None
    return guarded


def _traceback(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def _end_mlflow_run(client: Any, run_id: str, status: str, guarded: Callable) -> None:
    import mlflow

    active = mlflow.active_run()
    if active is not None and active.info.run_id == run_id:
        guarded("end the run", mlflow.end_run, status)
    else:
        guarded("end the run", client.set_terminated, run_id, status)


def _record_outcome(client: Any, run_id: str, end: _Outcome, guarded: Callable,
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
        if end.exc is not None:
            guarded("upload the traceback", client.log_text, run_id, _traceback(end.exc), "traceback.txt")
    if end.pruned:
        tags[T.PRUNED] = "true"
        guarded("tag the pruning", client.set_tag, run_id, T.PRUNED, "true")


def _fail_unbuilt(client: Any, run_id: str, end: _Outcome) -> None:
    """The run exists but its handle could not be built (no temp dir, broken logging...):
    end it with the reason instead of leaving it RUNNING forever."""
    guarded = _guard(run_id)
    if end.status == "FINISHED":  # only an exception can get here
        end = _Outcome("FAILED", "RuntimeError: the run could not start", EXIT_FAILED)
    _record_outcome(client, run_id, end, guarded, {})
    _end_mlflow_run(client, run_id, end.status, guarded)


@contextmanager
def _sigterm_as_exception() -> Iterator[None]:
    """SIGTERM raises :class:`RunInterrupted` in the main thread, so the run ends KILLED."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        raise RunInterrupted(f"signal {signal.Signals(signum).name}")

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextmanager
def start_run(cfg: TaskConfig, *, experiment: str | None = None,
              observers: Sequence[_observers.RunObserver] = ()) -> Iterator[Run]:
    """Run one task under tracking; see the module docstring for what happens when.

    ``observers`` watch this run (besides those named in ``LABRUN_OBSERVERS``).
    """
    store.quiet_environment()
    client = store.client()
    run_id, exp_id, adopted = _create_or_adopt(client, cfg, experiment)
    run: Run | None = None
    end = _Outcome()
    with _sigterm_as_exception():
        try:
            run = Run(cfg, run_id, exp_id, client)
            run._begin(adopted, observers)
            yield run
        except BaseException as exc:
            end = _Outcome.of(exc)
            if end.pruned:
                log.info("run %s pruned: %s", run_id, exc)
        finally:
            if run is None:
                _fail_unbuilt(client, run_id, end)
            else:
                run._finish(end)
    end.settle(run_id)


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
    c.set_tag(run_id, T.STATUS, status)


__all__ = ["NonFinite", "Run", "RunInterrupted", "start_run", "set_research_status"]
