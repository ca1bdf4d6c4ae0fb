"""One training step's losses, shared by the entry point and the benchmark.

Energy model: ``loss.denoise`` = MSE between ``dE/dy`` at a noised answer and the noise;
``loss.energy`` = ``softplus(E_pos - E_neg)`` on mined negatives (0 for ``none``), weighted
by ``mining.energy_weight`` (0.5 published). Feedforward: plain MSE on ``x -> y``.
All randomness comes from the passed generator, which the run checkpoints.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from projects.ired.diffusion import Schedule
from projects.ired.mining import mine


@dataclass
class StepLosses:
    total: torch.Tensor
    denoise: torch.Tensor | None = None
    energy: torch.Tensor | None = None


def energy_losses(model, x, y0, schedule: Schedule, mining_cfg, generator) -> StepLosses:
    """Denoising + energy-landscape loss for one batch (published IRED objective)."""
    b = x.shape[0]
    dev = x.device
    t = torch.randint(0, schedule.timesteps, (b,), generator=generator).to(dev)
    noise = torch.randn(y0.shape, generator=generator).to(dev)
    y_t = schedule.q_sample(y0, t, noise)
    denoise = F.mse_loss(model(x, y_t, t), noise)
    if mining_cfg.strategy == "none":
        zero = torch.zeros((), device=dev)
        return StepLosses(total=denoise, denoise=denoise, energy=zero)
    noise2 = torch.randn(y0.shape, generator=generator).to(dev)
    neg = mine(mining_cfg.strategy, model, x, y0, t, noise2, schedule, mining_cfg, generator)
    pos = schedule.q_sample(y0, t, noise2)
    e = model.energy(torch.cat([x, x]), torch.cat([pos, neg.y_neg]), torch.cat([t, t]))
    e_pos, e_neg = e[:b], e[b:]
    energy = F.softplus(e_pos - e_neg).mean()
    total = denoise + mining_cfg.energy_weight * energy
    return StepLosses(total=total, denoise=denoise, energy=energy)


def feedforward_losses(model, x, y0) -> StepLosses:
    loss = F.mse_loss(model(x), y0)
    return StepLosses(total=loss)
