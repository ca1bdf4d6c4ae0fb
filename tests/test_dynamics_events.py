"""The instability-event rule, time to recover, wasted steps and trigger matching, on
series whose answers are known by construction."""
from __future__ import annotations

import math
import random

from projects.dynamics.events import EventDetector, costs, detect, match_triggers, wasted_steps


def _detector(**kw) -> EventDetector:
    args = dict(k=4.0, k_recover=2.0, ema_decay=0.9, window=30, warmup=30, max_recover=100, calm=3)
    args.update(kw)
    return EventDetector(**args)


def _series(n=300, spikes=(), width=5, height=1.0, seed=0):
    rng = random.Random(seed)
    out = [2.0 + 0.02 * rng.gauss(0, 1) for _ in range(n)]
    for s in spikes:
        for i in range(s, min(n, s + width)):
            out[i - 1] += height   # step s is index s-1
    return out


def test_each_spike_is_one_event_with_its_recovery_time():
    losses = _series(spikes=(100, 200), width=5)
    events = detect(losses, _detector())
    assert [e.start for e in events] == [100, 200]
    assert [e.recovered_at - e.start for e in events] == [5, 5]   # back in band at the 6th step


def test_noise_alone_is_not_an_event_and_nan_is():
    assert detect(_series(n=400, seed=3), _detector()) == []
    losses = _series()
    losses[149] = float("nan")
    assert [e.start for e in detect(losses, _detector())] == [150]


def test_one_lucky_batch_inside_the_band_is_not_a_recovery():
    losses = _series(spikes=(100,), width=12)
    losses[104] = 2.0             # one calm step in the middle of the spike
    (event,) = detect(losses, _detector())
    assert event.recovered_at == 112


def test_an_event_that_never_recovers_is_censored_and_counted_apart():
    losses = _series(n=400)
    losses = losses[:150] + [v + 1.0 for v in losses[150:]]   # a permanent step up at step 151
    events = detect(losses, _detector(max_recover=50))
    assert events[0].start == 151 and events[0].censored and events[0].recovered_at is None
    rep = costs(losses, events, flops_per_step=10.0, ema_decay=0.9, max_recover=50)
    assert rep.unrecovered >= 1 and rep.ttr_all[0] == 50


def test_wasted_steps_run_until_the_smoothed_loss_regains_its_pre_event_level():
    losses = [3.0 - 0.01 * i for i in range(100)]      # steady progress
    losses[50:55] = [5.0] * 5                           # a spike at steps 51..55
    wasted = wasted_steps(losses, [51], ema_decay=0.5)
    assert 5 <= wasted <= 12
    flat = [2.0] * 100
    flat[50:] = [2.5] * 50                              # never regains: progress since step 1 lost
    assert wasted_steps(flat, [51], ema_decay=0.5) == 100 - 0
    rep = costs(losses, detect(losses, _detector(warmup=10, window=10)), 2.0, 0.5, 100)
    assert rep.wasted_share == wasted / 100 and rep.per_100k == 1e5 / 100


def test_trigger_matching_within_the_lead_window():
    m = match_triggers(triggers=[95, 150, 198], events=[100, 200, 300], lead=10)
    assert m["precision"] == 2 / 3 and m["recall"] == 2 / 3 and m["mean_lead"] == 3.5
    assert math.isnan(match_triggers([], [5], 3)["precision"])
    assert match_triggers([5], [5], 0)["recall"] == 1.0      # firing at the event counts
