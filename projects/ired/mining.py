"""Negative mining for the energy-landscape loss ``softplus(E_pos - E_neg)``.

The loss pushes the energy of wrong answers (negatives) above that of the right one
(positive) at the same noise level. Which negatives it sees is the research question:

- ``none``: no energy-landscape term (the denoising loss alone shapes the landscape);
- ``random``: the target noised 3x (``random_source=noised_target``) or another problem's
  target (``shuffled_target``), no optimisation: easy negatives;
- ``adversarial``: the target noised 3x, then ``opt_steps`` energy steps (descent finds
  hard negatives: wrong answers the model already scores low); with ``opt_steps=2``,
  ``ascent_lr=1`` and no noise this is the published IRED negative;
- ``mixed``: the first ``adversarial_fraction`` of each batch adversarial, the rest random.

Every negative is then mapped back to clean space, clamped, and re-noised with the *same*
noise as its positive, so the pair differs only in the answer, as in the published code.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from projects.ired.diffusion import Schedule

STRATEGIES = ("none", "random", "adversarial", "mixed")


@dataclass
class Negatives:
    """Mined negatives for one batch, plus what the diagnostics need to know about them."""

    y_neg: torch.Tensor
    """Noised negatives at the batch's timesteps (what the energy loss scores)."""
    x0_neg: torch.Tensor
    """The clean-space answers they stand for (for conditioning and false negatives)."""
    n_adversarial: int = 0
    start_energy: torch.Tensor | None = None
    """Energy where mining started (adversarial part only)."""
    end_energy: torch.Tensor | None = None
    """Energy after the mining steps (adversarial part only)."""
    grad_norms: list[float] = field(default_factory=list)
    """Mean ``||dE/dy||`` over the adversarial samples, one value per mining step."""


def _random_x0(y0, t, noise, schedule: Schedule, cfg, generator):
    if cfg.random_source == "shuffled_target" and y0.shape[0] > 1:
        return y0.roll(1, dims=0)
    start = schedule.q_sample(y0, t, cfg.negative_noise * noise)
    return schedule.unscale(start, t).clamp(-schedule.clamp, schedule.clamp)


def _adversarial(model, x, y0, t, noise, schedule: Schedule, cfg, generator):
    """Energy steps from the target noised ``negative_noise`` times; returns (x0, stats)."""
    lim = schedule.limit(t)
    # Start inside the answer box (the published code clamps only after the first step), so
    # the energy at the start is that of a candidate the steps could actually return.
    y = schedule.q_sample(y0, t, cfg.negative_noise * noise).clamp(-lim, lim).detach()
    sign = -1.0 if cfg.direction == "descent" else 1.0
    start_e, norms = None, []
    e = None
    for _ in range(cfg.opt_steps):
        e, g = model.energy_and_grad(x, y, t)
        if start_e is None:
            start_e = e.detach()
        norms.append(float(g.detach().norm(dim=-1).mean()))
        new = y + sign * cfg.ascent_lr * schedule.at(schedule.step_size, t) * g
        if cfg.noise_scale > 0:
            eps = torch.randn(y.shape, generator=generator).to(y.device)
            new = new + cfg.noise_scale * schedule.at(schedule.sqrt_1m_ab, t) * eps
        new = new.clamp(-lim, lim).detach()
        if cfg.reject_uphill:
            with torch.no_grad():
                e_new = model.energy(x, new, t)
            worse = e_new > e if cfg.direction == "descent" else e_new < e
            new = torch.where(worse[:, None], y, new)
        y = new
    with torch.no_grad():
        end_e = model.energy(x, y, t)
    if start_e is None:
        start_e = end_e
    x0 = schedule.unscale(y, t).clamp(-schedule.clamp, schedule.clamp)
    return x0, start_e, end_e, norms


def mine(strategy: str, model, x, y0, t, noise, schedule: Schedule, cfg, generator) -> Negatives:
    """Negatives for a batch: ``y0`` clean targets, ``noise`` the positive's noise.

    ``strategy='none'`` returns the random negatives (diagnostics still compare the
    baseline's landscape against them; training then skips the energy term).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown mining strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
    b = y0.shape[0]
    if strategy == "adversarial":
        k = b
    elif strategy == "mixed":
        k = int(round(cfg.adversarial_fraction * b))
    else:
        k = 0
    x0 = _random_x0(y0, t, noise, schedule, cfg, generator) if k < b else None
    out = Negatives(y_neg=y0, x0_neg=y0, n_adversarial=k)
    if k > 0:
        adv, out.start_energy, out.end_energy, out.grad_norms = _adversarial(
            model, x[:k], y0[:k], t[:k], noise[:k], schedule, cfg, generator)
        x0 = adv if x0 is None else torch.cat([adv, x0[k:]], dim=0)
    out.x0_neg = x0.detach()
    out.y_neg = schedule.q_sample(out.x0_neg, t, noise).detach()
    return out
