"""Negative mining on a tiny energy model: energies move the way each strategy says."""
from __future__ import annotations

import pytest
import torch

from projects.ired.config import MiningConfig
from projects.ired.diffusion import Schedule, opt_steps, sample
from projects.ired.mining import mine
from projects.ired.model import EnergyMLP


def _setup(b=32, dim=9):
    torch.manual_seed(0)
    model = EnergyMLP(dim, hidden=32, layers=3, time_dim=16)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, dim, generator=g)
    y0 = torch.randn(b, dim, generator=g) * 0.3
    t = torch.randint(0, 10, (b,), generator=g)
    noise = torch.randn(b, dim, generator=g)
    return model, x, y0, t, noise, Schedule.cosine(10), g


@pytest.mark.parametrize("reject", [True, False])
def test_adversarial_descent_lowers_energy_and_stays_finite(reject):
    model, x, y0, t, noise, sch, g = _setup()
    cfg = MiningConfig(strategy="adversarial", opt_steps=4, ascent_lr=2.0, reject_uphill=reject)
    neg = mine("adversarial", model, x, y0, t, noise, sch, cfg, g)
    assert neg.n_adversarial == 32 and len(neg.grad_norms) == 4
    assert torch.isfinite(neg.y_neg).all() and torch.isfinite(neg.end_energy).all()
    assert neg.end_energy.mean() < neg.start_energy.mean()
    if reject:  # rejection makes every single sample monotone
        assert (neg.end_energy <= neg.start_energy + 1e-5).all()
    assert neg.x0_neg.abs().max() <= sch.clamp + 1e-6


def test_ascent_raises_energy():
    model, x, y0, t, noise, sch, g = _setup()
    cfg = MiningConfig(strategy="adversarial", opt_steps=3, direction="ascent")
    neg = mine("adversarial", model, x, y0, t, noise, sch, cfg, g)
    assert neg.end_energy.mean() > neg.start_energy.mean()


def test_mixed_mines_the_configured_fraction_and_random_mines_nothing():
    model, x, y0, t, noise, sch, g = _setup(b=20)
    mixed = mine("mixed", model, x, y0, t, noise, sch, MiningConfig(adversarial_fraction=0.25), g)
    assert mixed.n_adversarial == 5 and mixed.x0_neg.shape == y0.shape
    rnd = mine("random", model, x, y0, t, noise, sch, MiningConfig(), g)
    assert rnd.n_adversarial == 0 and rnd.grad_norms == [] and rnd.start_energy is None
    # The random part of a mixed batch is exactly the random negatives.
    assert torch.equal(mixed.x0_neg[5:], rnd.x0_neg[5:])
    # Negatives are re-noised with the positive's noise: same noise, different answer.
    assert torch.allclose(rnd.y_neg, sch.q_sample(rnd.x0_neg, t, noise))
    shuffled = mine("random", model, x, y0, t, noise, sch, MiningConfig(random_source="shuffled_target"), g)
    assert torch.equal(shuffled.x0_neg, y0.roll(1, dims=0))
    with pytest.raises(ValueError, match="unknown mining strategy 'hard'"):
        mine("hard", model, x, y0, t, noise, sch, MiningConfig(), g)


def test_inference_opt_steps_never_raise_energy_and_sampling_is_seeded():
    model, x, y0, t, noise, sch, g = _setup()
    y = sch.q_sample(y0, t, noise)
    with torch.no_grad():
        before = model.energy(x, y, t)
    after = model.energy(x, opt_steps(model, x, y, t, sch, 3), t).detach()
    assert (after <= before + 1e-5).all()
    s1 = sample(model, x, sch, inference_steps=2, generator=torch.Generator().manual_seed(5))
    s2 = sample(model, x, sch, inference_steps=2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(s1, s2) and s1.shape == y0.shape and torch.isfinite(s1).all()
