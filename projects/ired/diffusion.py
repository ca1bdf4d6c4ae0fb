"""IRED's diffusion: cosine schedule, energy optimisation steps, and sampling.

Sampling follows the published code: start from noise; at each timestep predict ``x0``
from the noise prediction ``dE/dy``, clamp it, rescale it to that timestep, take a few
energy-descent steps (step size from the schedule, clamped, uphill steps rejected), then
rescale to the next timestep. The answer is the final ``x0``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def cosine_betas(timesteps: int, s: float = 0.008):
    """Nichol & Dhariwal's cosine schedule (float64), betas clipped at 0.999."""
    x = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
    ac = torch.cos(((x / timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2
    ac = ac / ac[0]
    return torch.clip(1 - ac[1:] / ac[:-1], 0, 0.999)


@dataclass
class Schedule:
    """Per-timestep constants, float32, on the model's device."""

    timesteps: int
    betas: torch.Tensor
    sqrt_ab: torch.Tensor
    sqrt_1m_ab: torch.Tensor
    step_size: torch.Tensor
    clamp: float

    @classmethod
    def cosine(cls, timesteps: int, clamp: float = 2.0, device=None) -> "Schedule":
        betas = cosine_betas(timesteps)
        ab = torch.cumprod(1 - betas, 0)
        # The published inner-loop step size: beta_t / sqrt(1 - alpha_bar_t).
        step = betas * torch.sqrt(1 / (1 - ab))
        f = lambda v: v.to(dtype=torch.float32, device=device)  # noqa: E731
        return cls(timesteps, f(betas), f(ab.sqrt()), f((1 - ab).sqrt()), f(step), clamp)

    def at(self, values: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Gather per-sample constants as a column ``(B, 1)``."""
        return values[t][:, None]

    def q_sample(self, y0, t, noise):
        """Noise a clean answer to timestep ``t``."""
        return self.at(self.sqrt_ab, t) * y0 + self.at(self.sqrt_1m_ab, t) * noise

    def x0_from_noise(self, y_t, t, eps):
        return (y_t - self.at(self.sqrt_1m_ab, t) * eps) / self.at(self.sqrt_ab, t)

    def unscale(self, y_t, t):
        """The clean-space answer a noised point stands for (no noise removed)."""
        return y_t / self.at(self.sqrt_ab, t)

    def limit(self, t):
        """Clamp bound of noised answers at ``t``: ``clamp * sqrt(alpha_bar_t)``."""
        return self.at(self.sqrt_ab, t) * self.clamp


def opt_steps(model, x, y, t, schedule: Schedule, steps: int, *, scale: float = 1.0,
              reject_uphill: bool = True):
    """``steps`` energy-descent steps ``y <- y - scale * step_size[t] * dE/dy``, clamped.

    A step that raises a sample's energy is undone for that sample. Returns detached ``y``.
    """
    y = y.detach()
    lim = schedule.limit(t)
    for _ in range(steps):
        e, g = model.energy_and_grad(x, y, t)
        new = (y - scale * schedule.at(schedule.step_size, t) * g).clamp(-lim, lim).detach()
        if reject_uphill:
            with torch.no_grad():
                bad = model.energy(x, new, t) > e
            new = torch.where(bad[:, None], y, new)
        y = new
    return y


def sample(model, x, schedule: Schedule, *, inference_steps: int, generator=None,
           reject_uphill: bool = True):
    """Predict answers for problems ``x`` by reverse diffusion with energy descent."""
    b, dim = x.shape
    y = torch.randn(b, dim, generator=generator).to(x.device)
    x0 = y
    for step in reversed(range(schedule.timesteps)):
        t = torch.full((b,), step, dtype=torch.long, device=x.device)
        _, eps = model.energy_and_grad(x, y, t)
        x0 = schedule.x0_from_noise(y, t, eps.detach()).clamp(-schedule.clamp, schedule.clamp)
        y = schedule.at(schedule.sqrt_ab, t) * x0
        y = opt_steps(model, x, y, t, schedule, inference_steps, reject_uphill=reject_uphill)
        x0 = schedule.unscale(y, t)
        if step > 0:
            y = schedule.at(schedule.sqrt_ab, t - 1) * x0
    return x0.detach()
