"""The monitor's parts on hand-made inputs: z-score, each signal, the hysteresis trigger,
the forecaster ensemble, and the whole index on a synthetic loss series with known spikes."""
from __future__ import annotations

import math
import random

import pytest

from projects.dynamics.config import MonitorConfig
from projects.dynamics.monitor import HysteresisTrigger, InternalEntropy, Monitor, Observation, Volatility, ZScore


def test_zscore_is_zero_in_warmup_then_measures_against_the_trailing_window():
    z = ZScore(window=4, warmup=3)
    assert [z(v) for v in (1.0, 2.0, 3.0)] == [0.0, 0.0, 0.0]
    assert z(2.0) == pytest.approx(0.0)           # mean 2, std 1 of (1, 2, 3)
    assert z(5.0) == pytest.approx((5 - 2) / math.sqrt(2 / 3))  # window now 1,2,3,2
    assert z(float("nan")) == 10.0                 # a non-finite value is maximal news
    assert list(z.values) == [2.0, 3.0, 2.0, 5.0]  # ... and never enters the window


def test_volatility_is_high_on_a_loss_jump_and_near_zero_on_noise():
    rng = random.Random(0)
    vol = Volatility(ema_decay=0.9, window=30, warmup=10)
    calm = [vol(2.0 + 0.01 * rng.gauss(0, 1), 1.0 + 0.01 * rng.gauss(0, 1)) for _ in range(60)]
    assert max(abs(v) for v in calm[20:]) < 3.5
    assert vol(3.0, 1.0) > 5          # the loss residual alone: half of a clipped z of 10
    assert vol(2.0, 10.0) > 4         # the gradient norm jumps 10x


def test_internal_entropy_reacts_to_collapse_and_to_spread_alike():
    for jump in (-0.5, +0.5):
        ent = InternalEntropy(window=20, warmup=5)
        rng = random.Random(1)
        for _ in range(30):
            ent(2.0 + 0.01 * rng.gauss(0, 1), 3.0 + 0.01 * rng.gauss(0, 1))
        assert ent(2.0 + jump, 3.0) > 4.0, jump   # |z|: a drop is news as much as a rise


def test_trigger_hysteresis_one_fire_per_excursion():
    trig = HysteresisTrigger(tau=3.0, tau_low=1.0)
    scores = [0, 4, 5, 2.5, 4, 0.5, 0, 3.5, 0.9, 3.1]
    fired = [i for i, s in enumerate(scores) if trig(s)]
    assert fired == [1, 7, 9]     # 2.5 does not re-arm it, 0.5 and 0.9 do
    with pytest.raises(ValueError, match="tau_low"):
        HysteresisTrigger(tau=1.0, tau_low=2.0)


def _synthetic_losses(spikes: list[int], n: int = 400, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    out = []
    for t in range(n):
        base = 2.0 + 2.0 * math.exp(-t / 60) + 0.02 * rng.gauss(0, 1)
        bump = sum(1.5 * math.exp(-(t - s) / 6) for s in spikes if s <= t)
        out.append(base + bump)
    return out


def test_index_trigger_fires_once_per_spike_on_a_synthetic_run():
    spikes = [150, 250, 330]
    cfg = MonitorConfig(window=40, warmup=20, w_disagreement=0.5, forecasters=3, horizon=3, history=8)
    mon = Monitor(cfg, seed=0)
    rng = random.Random(2)
    fired = []
    for t, loss in enumerate(_synthetic_losses(spikes)):
        grad = 1.0 + 0.02 * rng.gauss(0, 1) + (4.0 if t in spikes else 0.0)
        out = mon(Observation(loss, grad, 2.0 + 0.01 * rng.gauss(0, 1), 3.0 + 0.01 * rng.gauss(0, 1)))
        assert set(out) >= {"dynamics.index", "dynamics.volatility", "dynamics.entropy",
                            "dynamics.disagreement", "dynamics.trigger", "dynamics.trigger_loss"}
        if out["dynamics.trigger"]:
            fired.append(t)
    assert len(fired) == len(spikes), fired
    assert all(any(0 <= f - s <= 2 for f in fired) for s in spikes), fired


def test_forecasters_disagree_only_where_they_were_not_trained():
    from projects.dynamics.monitor.forecasters import ForecasterEnsemble

    ens = ForecasterEnsemble(k=4, history=6, horizon=2, hidden=8, lr=0.02, seed=0)
    outs = [ens(2.0 + 0.001 * (t % 3)) for t in range(300)]
    assert all(math.isnan(v) for v in outs[:7]) and all(math.isfinite(v) for v in outs[8:])
    calm = sum(outs[-50:]) / 50
    shock = max(ens(v) for v in (6.0, 0.5, 8.0, 0.3))
    assert shock > calm + 2.0     # log-variance: the shock multiplies the spread by > e^2


def test_monitor_state_round_trip_continues_identically():
    cfg = MonitorConfig(window=20, warmup=5, horizon=2, history=6)
    losses = _synthetic_losses([60], n=120)
    obs = [Observation(v, 1.0 + 0.1 * math.sin(i), 2.0, 3.0) for i, v in enumerate(losses)]
    a = Monitor(cfg, seed=3)
    for o in obs[:70]:
        a(o)
    state = a.state_dict()
    b = Monitor(cfg, seed=99)          # different init: the state must overwrite all of it
    b.load_state_dict(state)
    for o in obs[70:]:
        assert a(o) == b(o)
