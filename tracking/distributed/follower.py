"""The run handle of a DDP rank other than 0.

Rank 0 owns the MLflow run; every other rank runs the same task code against a
:class:`FollowerRun`: the same methods, so a task needs no ``if rank == 0`` around its
logging, but what would write to the run (metrics, tags, artifacts, components, models,
reports) is dropped. What the rank does share goes through collectives instead: its RNG
states and rank-local objects into rank 0's checkpoints, its failure and traceback into
rank 0's record of the run (:mod:`tracking.distributed.failures`). Its own system metrics
(``system/rank<k>/...``) and heartbeat tag (``labrun.heartbeat.rank<k>``) are the only
things it writes, so a stuck or starved rank shows in the UI.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from tracking import tags as T
from tracking.checkpointing import CheckpointConnector, Found
from tracking.components import ComponentResult, Provider
from tracking.config import TaskConfig
from tracking.distributed.world import World
from tracking.observers import HEARTBEAT_S
from tracking.run import Run
from tracking.seeding import seed_everything
from tracking.exits import EXIT_SIGINT, EXIT_SIGTERM
from tracking.signals import Terminated, sigterm_as_exception

_RECORDED_BY_RANK0 = "recorded by rank 0"


class NullMetrics:
    """A metric logger that keeps nothing: rank 0 logs the run's series."""

    def __init__(self) -> None:
        self.listeners: list = []   # per instance: a class-level list would be shared by every run

    def log(self, metrics: Mapping[str, float], step: int, timestamp_ms: int | None = None) -> None:
        pass

    def set_direction(self, name: str, direction: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def summary(self) -> dict[str, Any]:
        return {}


class FollowerRun(Run):
    """``with start_run(cfg) as run`` on rank k > 0 (see the module)."""

    def __init__(self, cfg: TaskConfig, run_id: str, experiment_id: str, client: Any, world: World) -> None:
        self.cfg, self.run_id, self.experiment_id, self.client, self.world = cfg, run_id, experiment_id, client, world
        self.local_dir = Path(tempfile.mkdtemp(prefix=f"labrun-{run_id[:8]}-rank{world.rank}-"))
        self.log = logging.getLogger(f"labrun.{cfg.task}.rank{world.rank}")
        self.device = world.device(_device(cfg))
        self.components, self.results, self.models, self.tags = {}, {}, {}, {}
        self.figures, self.datasets = [], []
        self.name = cfg.launch.name or run_id
        self.started_at = time.time()
        self.metrics = NullMetrics()
        self.checkpoints = CheckpointConnector(self)
        self.loop = None
        self._stop = threading.Event()
        self._sysmetrics: Any = None

    # what rank 0 records: dropped here
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def set_tag(self, key: str, value: Any) -> None:
        self.tags[key] = str(value)

    def component(self, name: str, provider: Provider) -> ComponentResult:
        return self.components.setdefault(name, ComponentResult.disabled(_RECORDED_BY_RANK0))

    def report_components(self, components: Any, ctx: Any) -> None:
        pass

    def log_figure(self, figure: Any, name: str) -> str:
        import matplotlib.pyplot as plt

        plt.close(figure)
        return name

    def log_artifact(self, local_path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def log_text(self, text: str, artifact_file: str) -> None:
        pass

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None:
        pass

    def log_dataset(self, features: Any, *, name: str, split: str, targets: Any = None,
                    source: str | None = None) -> str:
        return ""

    def log_model(self, model: Any, input_example: Any, *, name: str = "model") -> ComponentResult:
        return ComponentResult.disabled(_RECORDED_BY_RANK0)

    def progress(self, iterable: Iterable, *, total: int | None = None, desc: str = "",
                 initial: int = 0) -> Iterable:
        return iterable  # one bar per job: rank 0's

    def epoch_line(self, epoch: int, total: int, metrics: Mapping[str, float], elapsed_s: float,
                   keys: Iterable[str] | None = None) -> str:
        return ""

    # ------------------------------------------------------------------ its own watchers
    def _watch(self) -> None:
        from tracking.sysmetrics import SystemMetrics

        self._sysmetrics = SystemMetrics(self.run_id, self.cfg.launch.system_metrics,
                                         node_id=f"rank{self.world.rank}")
        self._sysmetrics.start()
        threading.Thread(target=self._heartbeat, daemon=True, name="labrun-heartbeat").start()

    def _heartbeat(self) -> None:
        key = f"{T.HEARTBEAT}.rank{self.world.rank}"
        while True:
            try:
                self.client.set_tag(self.run_id, key, f"{time.time():.0f}")
            except Exception:
                pass
            if self._stop.wait(HEARTBEAT_S):
                return

    def _close(self) -> None:
        self._stop.set()
        if self._sysmetrics is not None:
            try:
                self._sysmetrics.stop()
            except Exception as exc:
                self.log.debug("system metrics of rank %d: %s", self.world.rank, exc)
        shutil.rmtree(self.local_dir, ignore_errors=True)


def _device(cfg: TaskConfig) -> Any:
    from tracking.seeding import resolve_device

    return resolve_device(cfg.device)


@contextmanager
def follow(cfg: TaskConfig, client: Any, world: World, found: Found | None) -> Iterator[FollowerRun]:
    """Rank k's side of ``start_run``: rank 0 says which run; a failure here is told to it."""
    run_id, experiment_id = world.broadcast(None)
    run = FollowerRun(cfg, run_id, experiment_id, client, world)
    if found is not None:
        run.checkpoints.restore(found, record=False)
    seed_everything(cfg.seed + world.rank, cfg.deterministic)
    run._watch()
    with sigterm_as_exception():
        try:
            yield run
        except Terminated:
            raise SystemExit(EXIT_SIGTERM) from None  # rank 0 says how the run ended
        except KeyboardInterrupt:
            raise SystemExit(EXIT_SIGINT) from None
        except SystemExit:
            raise
        except BaseException as exc:
            world.report_failure(f"{type(exc).__name__}: {exc}", "".join(
                traceback.format_exception(type(exc), exc, exc.__traceback__)))
            raise
        finally:
            run._close()


__all__ = ["FollowerRun", "NullMetrics", "follow"]
