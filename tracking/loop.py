"""The training loop's contract with checkpoints, in one place instead of in every task.

Four lines decide whether a resumed run continues the same future: where the loop starts
after a resume, what the progress bar counts from, that a checkpoint is written only
*after* the step's metrics are logged (a resume copies the history up to the checkpoint's
step and continues with the next one), and that an early stop is itself checkpointed so a
resume does not train on. :class:`Steps` owns all four; a task writes::

    state = MyTrainerState()                       # anything else the future depends on
    run.track_state(model=model, optimizer=opt, trainer=state)
    loop = run.steps(cfg.train.steps)              # resumes after the checkpoint's step
    for step in loop:
        ...
        run.log_metrics(metrics, step=step)        # the step's checkpoint follows this
        if converged:
            loop.stop("early stopping: ...")       # checkpointed, then the loop ends

Leave the loop with ``loop.stop``, not ``break``: a ``break`` skips the step's checkpoint.
"""
from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:
    from tracking.run import Run

LOOP_KEY = "loop"  # where the loop's own state sits in a checkpoint's ``extra``


class TrainerState:
    """Base for trainer-side state a checkpoint must hold: early stopping, best weights,
    histories for figures. Subclass it with plain attributes set in ``__init__``; every
    attribute is saved and restored (deep-copied, so later mutation cannot leak into a
    saved snapshot). Pass it to ``run.track_state(trainer=...)`` like a model."""

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy(vars(self))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        vars(self).update(copy.deepcopy(state))


class Steps:
    """``for step in run.steps(n)``: steps (or epochs) ``start..n`` with resume and checkpoints.

    After the body of step ``s`` has run (and logged), the loop saves a checkpoint when
    ``checkpoint.every`` divides ``s``, at the last step, and at an early stop. ``unit`` is
    ``"step"`` or ``"epoch"``: with epochs the checkpoint records ``epoch=s`` as well.
    A body that raises leaves no checkpoint of its half-done step.
    """

    def __init__(self, run: "Run", total: int, *, desc: str = "", unit: str = "step") -> None:
        if unit not in ("step", "epoch"):
            raise ValueError(f"unit must be 'step' or 'epoch', got {unit!r}")
        self.run = run
        self.total = int(total)
        self.unit = unit
        self.desc = desc or run.cfg.task
        loop = (run.resume.extra.get(LOOP_KEY, {}) if run.resume else {})
        self.start = (run.resume.global_step + 1) if run.resume else 1
        self.stopped_at: int | None = loop.get("stopped_at")
        self.stop_reason: str = loop.get("stop_reason", "")
        self.last = self.start - 1
        self.t0 = time.time()

    @property
    def elapsed_s(self) -> float:
        """Wall time of this process's share of the loop (for epoch lines)."""
        return time.time() - self.t0

    def stop(self, reason: str) -> None:
        """End training after the current step; the stop is checkpointed with it."""
        self.stopped_at, self.stop_reason = self.last, reason
        self.run.log.info("%s at %s %d", reason, self.unit, self.last)

    def __iter__(self) -> Iterator[int]:
        if not self.run.tracked:
            raise RuntimeError("call run.track_state(model=..., optimizer=...) before run.steps(...)")
        if self.stopped_at is not None:  # resumed a run that had already stopped early
            self.run.log.info("the resumed run stopped at %s %d (%s): nothing left to train",
                              self.unit, self.stopped_at, self.stop_reason)
            return
        bar = self.run.progress(range(self.start, self.total + 1), total=self.total,
                                initial=self.start - 1, desc=self.desc)
        for step in bar:
            self.last = step
            yield step  # the body runs here; we come back only if it neither raised nor broke
            stopping = self.stopped_at == step
            if stopping or step == self.total or self.run.should_checkpoint(step):
                self._save(step)
            if stopping:
                return

    def _save(self, step: int) -> None:
        loop = {"stopped_at": self.stopped_at, "stop_reason": self.stop_reason}
        self.run.save_checkpoint(step, epoch=step if self.unit == "epoch" else 0,
                                 extra={LOOP_KEY: loop})


__all__ = ["Steps", "TrainerState", "LOOP_KEY"]
