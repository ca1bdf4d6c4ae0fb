"""Instability events and what they cost: the study's primary metrics.

The rule (``events.*`` config keys):

* **event**: at step t the loss is not finite, or ``loss_t > ema_{t-1} + k * std`` where
  ``ema`` is an EMA of the loss (decay ``ema_decay``) and ``std`` the standard deviation of
  the residual ``loss - ema`` over the trailing ``window`` calm steps; none during the
  first ``warmup`` steps. While an event is open the band is frozen (a spike must not
  widen the band that decides when it is over) and no new event can start.
* **recovery**: the loss is back within ``ema_start + k_recover * std_start`` for ``calm``
  consecutive steps (one lucky batch inside the band is not a recovery); time to recover =
  the first of those steps - the start step. An
  event still open after ``max_recover`` steps, or at the end of the run, is unrecovered
  (its time to recover is censored at that many steps and counted apart).
* **wasted FLOPs**: the steps whose progress was later lost. With ``s`` the loss EMA
  (never frozen) and ``L0 = s`` just before an event, the wasted steps run from the event
  to the first step where ``s <= L0`` again; if that never happens, from the first step at
  which ``s`` had reached its final value to the end (the progress of those steps was
  undone). Steps are counted once however many events overlap them; share = wasted / all
  training FLOPs (FLOPs per step are constant, see model.flops_per_token).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence


@dataclass
class Event:
    start: int
    recovered_at: int | None = None
    censored: bool = False


class EventDetector:
    """Online form of the rule, fed one loss per step (checkpointed with the trainer)."""

    def __init__(self, k: float, k_recover: float, ema_decay: float, window: int, warmup: int,
                 max_recover: int, calm: int = 5) -> None:
        self.k, self.k_recover, self.decay, self.calm = k, k_recover, ema_decay, calm
        self.window, self.warmup, self.max_recover = window, warmup, max_recover
        self.ema: float | None = None
        self.resid: deque[float] = deque(maxlen=window)
        self.seen = 0
        self.open: dict[str, float] | None = None
        self.events: list[Event] = []

    @classmethod
    def from_config(cls, e: Any) -> "EventDetector":
        return cls(e.k, e.k_recover, e.ema_decay, e.window, e.warmup, e.max_recover, e.calm)

    def _std(self) -> float:
        n = len(self.resid)
        mean = sum(self.resid) / n
        return math.sqrt(sum((r - mean) ** 2 for r in self.resid) / max(1, n - 1))

    def __call__(self, step: int, loss: float) -> tuple[bool, bool]:
        """(an event starts at this step, an open event recovers at this step)."""
        self.seen += 1
        if self.open is not None:
            return False, self._check_recovery(step, loss)
        ready = self.seen > self.warmup and len(self.resid) >= 2 and self.ema is not None
        if ready and (not math.isfinite(loss) or loss > self.ema + self.k * self._std()):
            std = self._std()
            self.open = {"start": step, "level": self.ema + self.k_recover * std, "calm_since": None}
            self.events.append(Event(step))
            return True, False
        if math.isfinite(loss):
            if self.ema is not None:
                self.resid.append(loss - self.ema)
            self.ema = loss if self.ema is None else self.decay * self.ema + (1 - self.decay) * loss
        return False, False

    def _check_recovery(self, step: int, loss: float) -> bool:
        event = self.events[-1]
        if math.isfinite(loss) and loss <= self.open["level"]:
            since = self.open["calm_since"] = self.open["calm_since"] or step
            if step - since + 1 >= self.calm:
                event.recovered_at = since
                self.open = None
                return True
        else:
            self.open["calm_since"] = None
        if step - event.start >= self.max_recover:
            event.censored = True
            self.open = None
            self.ema = loss if math.isfinite(loss) else self.ema  # the loss found a new level
            self.resid.clear()
        return False

    def state_dict(self) -> dict[str, Any]:
        return {"ema": self.ema, "resid": list(self.resid), "seen": self.seen, "open": self.open,
                "events": [vars(e).copy() for e in self.events]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema, self.seen, self.open = state["ema"], state["seen"], state["open"]
        self.resid = deque(state["resid"], maxlen=self.window)
        self.events = [Event(**e) for e in state["events"]]


def detect(losses: Sequence[float], detector: EventDetector, first_step: int = 1) -> list[Event]:
    for i, loss in enumerate(losses):
        detector(first_step + i, loss)
    return detector.events


def wasted_steps(losses: Sequence[float], starts: Sequence[int], ema_decay: float, first_step: int = 1) -> int:
    """Steps whose progress was later lost (the rule in the module docstring)."""
    s, ema = [], None
    for x in losses:
        if math.isfinite(x):
            ema = x if ema is None else ema_decay * ema + (1 - ema_decay) * x
        s.append(ema if ema is not None else math.inf)
    n, wasted = len(s), set()
    for start in starts:
        i = start - first_step
        level = s[i - 1] if i > 0 else s[0]
        back = next((j for j in range(i, n) if s[j] <= level), None)
        if back is not None:
            wasted.update(range(i, back))
        else:
            final = s[-1]
            first = next((j for j in range(n) if s[j] <= final), i)
            wasted.update(range(min(first, i), n))
    return len(wasted)


def match_triggers(triggers: Sequence[int], events: Sequence[int], lead: int) -> dict[str, float]:
    """Precision/recall of triggers as forecasts of events.

    A trigger at step t is a hit if an event starts in [t, t + lead]; an event is caught if
    a trigger fired in [start - lead, start]. Mean lead is over caught events."""
    hits = sum(any(t <= e <= t + lead for e in events) for t in triggers)
    leads = [min(e - t for t in triggers if e - lead <= t <= e) for e in events
             if any(e - lead <= t <= e for t in triggers)]
    return {"precision": hits / len(triggers) if triggers else math.nan,
            "recall": len(leads) / len(events) if events else math.nan,
            "mean_lead": sum(leads) / len(leads) if leads else math.nan,
            "triggers": float(len(triggers)), "hits": float(hits), "caught": float(len(leads)),
            "events": float(len(events))}


@dataclass
class CostReport:
    steps: int
    events: int
    unrecovered: int
    per_100k: float
    time_to_recover: float
    wasted_share: float
    wasted_flops: float
    total_flops: float
    ttr_all: list[int] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        return {"dynamics.events.count": float(self.events), "dynamics.events.per_100k": self.per_100k,
                "dynamics.events.unrecovered": float(self.unrecovered),
                "dynamics.events.time_to_recover": self.time_to_recover,
                "dynamics.events.wasted_share": self.wasted_share,
                "dynamics.events.wasted_flops": self.wasted_flops}


def costs(losses: Sequence[float], events: Sequence[Event], flops_per_step: float, ema_decay: float,
          max_recover: int, first_step: int = 1) -> CostReport:
    last = first_step + len(losses) - 1
    ttr = [(e.recovered_at - e.start) if e.recovered_at is not None else min(max_recover, last - e.start + 1)
           for e in events]
    wasted = wasted_steps(losses, [e.start for e in events], ema_decay, first_step)
    n = len(losses)
    return CostReport(n, len(events), sum(e.recovered_at is None for e in events),
                      len(events) / max(n, 1) * 1e5, sum(ttr) / len(ttr) if ttr else 0.0,
                      wasted / max(n, 1), wasted * flops_per_step, n * flops_per_step, ttr)
