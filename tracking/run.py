"""The run lifecycle: one tracked run from start to FINISHED, FAILED or KILLED.

``start_run(cfg)`` is the whole contract a task relies on. On entry it creates (or adopts)
the MLflow run, records provenance, tags, params and ``config.yaml``, seeds everything and,
with ``--resume``, loads the checkpoint to continue from. On exit, however the block ends,
it flushes metrics, writes ``summary.json`` and ``REPORT.md``, uploads the log and sets the
terminal status: an exception is FAILED with its reason, Ctrl-C or SIGTERM is KILLED.

The order of those steps reads in :func:`start_run`, :meth:`Run._begin` and
:meth:`Run._finish`; the work is done, as Lightning's trainer has it done, by connectors:
:mod:`tracking.startup` (what is recorded at the start), :mod:`tracking.checkpointing`
(checkpoints and resume), :mod:`tracking.outcome` (status, failure, summary, report),
:class:`tracking.observers.Watchers` (system metrics, heartbeat, observers) and
:mod:`tracking.divergence` (a non-finite loss).
"""
from __future__ import annotations

import logging
import shutil
import signal
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from tracking import checkpoint as ckpt
from tracking import distributed, leftovers
from tracking import observers as _observers
from tracking import startup, store
from tracking import tags as T
from tracking.checkpointing import SAVED_AT_KEY, CheckpointConnector, Found, fetch
from tracking.components import ComponentResult, Components, Provider, evaluate
from tracking.config import TaskConfig
from tracking.divergence import DivergenceWatch, NonFinite
from tracking.exits import EXIT_CONFIG
from tracking.logs import RunLogging
from tracking.loop import Steps
from tracking.metrics import MetricLogger
from tracking.outcome import Outcome, OutcomeRecorder, end_mlflow_run, fail_unbuilt
from tracking.progress import epoch_line, progress
from tracking.provenance import GitInfo, git_info
from tracking.seeding import resolve_device, seed_everything, set_threads
from tracking.signals import Terminated, ignore_sigterm, sigterm_as_exception

log = logging.getLogger("labrun")

RunInterrupted = Terminated
"""SIGTERM turned into an exception so the run can end KILLED instead of vanishing."""


class Run:
    """Handle a task uses inside ``with start_run(cfg) as run``.

    The object owns the whole lifecycle of its MLflow run: :meth:`_begin` records it,
    :meth:`_finish` ends it however the ``with`` block ended. Its checkpoints and resume
    state belong to :attr:`checkpoints`, the record of how it ended to :attr:`outcome`.
    """

    def __init__(self, cfg: TaskConfig, run_id: str, experiment_id: str, client: Any) -> None:
        self.cfg = cfg
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.client = client
        self.local_dir = Path(tempfile.mkdtemp(prefix=f"labrun-{run_id[:8]}-"))
        leftovers.claim(self.local_dir, run_id=run_id, kind="run")  # a SIGKILL leaves it to gc
        self.logs = RunLogging(self.local_dir / "logs" / "train.log")
        # Provenance of the code that runs (the schema's module), not of the working directory.
        self.git: GitInfo = git_info(Path(sys.modules[type(cfg).__module__].__file__).resolve().parent)
        self.log = logging.getLogger(f"labrun.{cfg.task}")
        self.world = distributed.current()
        self.device = self.world.device(resolve_device(cfg.device))
        self.components: dict[str, ComponentResult] = {}
        self.results: dict[str, Any] = {}
        self.figures: list[str] = []
        self.datasets: list[dict[str, Any]] = []
        self.models: dict[str, ComponentResult] = {}
        self.tags: dict[str, str] = {}
        self.name = cfg.launch.name or run_id
        self.started_at = time.time()
        self.checkpoints = CheckpointConnector(self)
        self.outcome = OutcomeRecorder(self)
        self.loop: Steps | None = None  # the task's run.steps(...), stopped on divergence
        self.metrics = MetricLogger(client, run_id, fast_uri=store.tracking_uri())
        self.watchers = _observers.Watchers(self)
        self._divergence = DivergenceWatch(self)

    # ------------------------------------------------------------------ metrics
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Hierarchical names (``loss.kl.z``) with an explicit step; batched, never lost.

        A watched metric (``divergence.metrics``) that is not finite ends the run here, after
        it is logged and before the step's checkpoint (see :mod:`tracking.divergence`)."""
        self.metrics.log(metrics, step)
        self._divergence.check(metrics, step)

    def log_metric(self, name: str, value: float, step: int) -> None:
        self.log_metrics({name: value}, step)

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

    # ------------------------------------------------------------------ many processes (torchrun)
    @property
    def rank(self) -> int:
        """This process's rank under torchrun (0 alone); rank 0 owns the MLflow run."""
        return self.world.rank

    @property
    def world_size(self) -> int:
        return self.world.size

    def distribute(self, model: Any) -> Any:
        """``model`` wrapped in DistributedDataParallel under torchrun, else ``model``.

        Track the module itself (``run.track_state(model=model)``), train through what this
        returns: DDP averages the gradients, so every rank holds the same weights."""
        if not self.world.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def all_ranks(self, metrics: Mapping[str, float]) -> dict[str, float]:
        """Each metric averaged over the ranks (every rank must call it, with the same names);
        what rank 0 then logs is the group's value, not its own shard's."""
        return self.world.mean(metrics)

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
        from tracking.models import log_model_status

        opts = self.cfg.launch
        result = log_model_status(model, input_example, name=name, mode=opts.log_model,
                                  register=opts.register_model, elapsed_s=time.time() - self.started_at)
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
        return self.checkpoints.track(objects)

    @property
    def tracked(self) -> Mapping[str, Any]:
        return dict(self.checkpoints.tracked)

    @property
    def resume(self) -> ckpt.ResumeInfo | None:
        """Where this run continues another (``--resume``), else None."""
        return self.checkpoints.resume

    def steps(self, total: int, *, desc: str = "", unit: str = "step") -> Steps:
        """The training loop: ``start..total`` after a resume, checkpointing after logging."""
        self.loop = Steps(self, total, desc=desc, unit=unit)
        return self.loop

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
        return self.checkpoints.save(global_step, epoch=epoch, extra=extra, best=best)

    # ------------------------------------------------------------------ lifecycle
    def _begin(self, adopted: bool, observers: Sequence[_observers.RunObserver],
               found: Found | None = None) -> None:
        """Everything between the MLflow run existing and the task's first line; ``found``:
        the checkpoint to resume from, read before the run existed."""
        import mlflow

        active = mlflow.active_run()
        if active is None or active.info.run_id != self.run_id:
            mlflow.start_run(run_id=self.run_id, nested=active is not None)
        self.watchers.start_system_metrics()
        startup.record_start(self, adopted)
        startup.close_stale_twins(self)
        if found is not None:
            self.checkpoints.restore(found)
            self.set_tag(T.RESUMED_STEP, self.resume.global_step)
        self.log_text(startup.config_yaml(self), "config.yaml")
        seed_everything(self.cfg.seed + self.world.rank, self.cfg.deterministic)
        self.watchers.start(observers)
        from tracking.views import run_url

        log.info("run %s started: task=%s method=%s seed=%s experiment=%s; in the MLflow UI: %s",
                 self.run_id, self.cfg.task, self.cfg.method_tag, self.cfg.seed, self.experiment_id,
                 run_url(self.experiment_id, self.run_id))

    def _finish(self, end: Outcome) -> None:
        """Everything that must happen however the run ended; each step guarded on its own."""
        guarded = self.outcome.guarded
        self.watchers.stop(guarded)
        self.checkpoints.complete(end)
        guarded("flush metrics", self.metrics.close)
        self.outcome.record(end)
        self.logs.flush()
        guarded("upload logs/train.log", self.logs.upload, self.client, self.run_id)
        self.logs.close()
        self.watchers.completed(end.status, guarded)
        end_mlflow_run(self.client, self.run_id, end.status, guarded)
        shutil.rmtree(self.local_dir, ignore_errors=True)


# ---------------------------------------------------------------------------- start_run

@contextmanager
def start_run(cfg: TaskConfig, *, experiment: str | None = None,
              observers: Sequence[_observers.RunObserver] = ()) -> Iterator[Run]:
    """Run one task under tracking; see the module docstring for what happens when.

    ``observers`` watch this run (besides those named in ``LABRUN_OBSERVERS``).
    """
    store.quiet_environment()
    set_threads(cfg.execution.num_threads)
    world = _join_world(cfg)
    client = store.client()
    trust = "--trust-checkpoints" if cfg.launch.trust_checkpoints else None
    with ckpt.trusting(trust):  # the run's own loads only, not the rest of the process
        found = _fetch_resume(client, cfg)
        if not world.leader:
            from tracking.distributed.follower import follow

            try:
                with follow(cfg, client, world, found) as follower:
                    yield follower
            finally:
                world.close()
            return
        run_id, exp_id, adopted = startup.create_or_adopt(client, cfg, experiment)
        world.broadcast((run_id, exp_id))  # the other ranks follow this run
        run: Run | None = None
        end = Outcome()
        with sigterm_as_exception(then=signal.SIG_IGN if world.distributed else None):
            try:
                run = Run(cfg, run_id, exp_id, client)
                run._begin(adopted, observers, found)
                yield run
            except BaseException as exc:
                if world.distributed:  # torchrun's SIGTERM must not cut the record of the end short
                    ignore_sigterm()
                end = Outcome.of(exc)
                if end.pruned:
                    log.info("run %s pruned: %s", run_id, exc)
                if world.distributed:
                    from tracking.distributed.failures import classify

                    end = classify(end, exc, world, cfg.execution.dist_timeout_s)
            finally:
                if world.distributed:  # also when the task finished: another rank may end first
                    ignore_sigterm()
                if run is None:
                    fail_unbuilt(client, run_id, end)
                else:
                    run._finish(end)
                    _say_ended(run, end)
                world.close()
    end.settle(run_id)


def _join_world(cfg: TaskConfig) -> "distributed.World":
    """Under torchrun: the process group, before any run exists (a task that trains in one
    process refuses a group in one line, exit 2)."""
    world = distributed.current()
    if world.distributed:
        from tracking.distributed.launch import refusal

        why = refusal(cfg)
        if why and not world.leader:  # rank 0 says it, once
            raise SystemExit(EXIT_CONFIG)
        if why:
            from tracking.config import exit_with_config_error

            exit_with_config_error(f"{why} (this process is one of WORLD_SIZE={world.size} ranks)", cfg)
        world.init(resolve_device(cfg.device), cfg.execution.dist_timeout_s)
    return world


def _say_ended(run: Run, end: Outcome) -> None:
    """The run's last console line: how it ended and where to look (its page, its report)."""
    from tracking.views import run_url

    took = time.time() - run.started_at
    print(f"{time.strftime('%H:%M:%S')} run {run.run_id} {end.status} after {took:.0f} s; in the MLflow UI: "
          f"{run_url(run.experiment_id, run.run_id)} (REPORT.html under Artifacts)", file=sys.stderr, flush=True)


def _fetch_resume(client: Any, cfg: TaskConfig) -> Found | None:
    """``--resume``'s checkpoint, before any run exists: a file the allow-list refuses is
    one line and exit 2, like a config error, and leaves no half-written run behind."""
    if not cfg.launch.resume:
        return None
    try:
        return fetch(client, cfg.launch.resume)
    except ckpt.UnsafeCheckpoint as exc:
        from tracking.config import exit_with_config_error

        exit_with_config_error(str(exc), cfg)


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


__all__ = ["NonFinite", "Run", "RunInterrupted", "SAVED_AT_KEY", "start_run", "set_research_status"]
