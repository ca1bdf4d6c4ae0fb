"""A watched training metric that is not finite: the run fails at that step (default), or
records the divergence as a result and stops training (``divergence.on_nonfinite``)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping

from tracking import tags as T

if TYPE_CHECKING:
    from tracking.run import Run


class NonFinite(RuntimeError):
    """A watched training metric became NaN or infinite: the run ends FAILED at that step
    (``divergence.on_nonfinite=fail``) with its last good checkpoint, not FINISHED with a
    ``nan`` that analysis would read as a result."""


class DivergenceWatch:
    """Checks each logged step's watched metrics (``divergence.metrics``, else the task's
    ``nonfinite_metrics``), after they are logged and before the step's checkpoint."""

    def __init__(self, run: "Run") -> None:
        cfg = run.cfg
        self.run = run
        self.watched = tuple(cfg.divergence.metrics if cfg.divergence.metrics is not None
                             else type(cfg).nonfinite_metrics)

    def check(self, metrics: Mapping[str, float], step: int) -> None:
        for name in self.watched:
            value = metrics.get(name)
            if value is not None and not math.isfinite(value):
                self._diverged(name, value, step)
                return

    def _diverged(self, name: str, value: float, step: int) -> None:
        run, what = self.run, f"{name} is {value} at step {step}"
        if run.cfg.divergence.on_nonfinite == "fail":
            raise NonFinite(f"{what}; the last good checkpoint is kept (to record divergence as a "
                            f"result instead: --set divergence.on_nonfinite=record)")
        if T.DIVERGED in run.tags:
            return
        run.set_tag(T.DIVERGED, step)
        run.log.warning("diverged: %s; training stops here and the run finishes (divergence.on_nonfinite"
                        "=record)", what)
        if run.loop is not None:
            run.loop.stop(f"diverged: {what}")


__all__ = ["DivergenceWatch", "NonFinite"]
