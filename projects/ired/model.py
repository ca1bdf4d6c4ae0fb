"""The two models: IRED's energy MLP and the supervised feedforward baseline.

The energy model scores a candidate answer ``y`` for a problem ``x`` at diffusion time
``t``; its noise prediction is ``dE/dy``, so training the denoiser shapes the energy
landscape that inference then descends. The feedforward net has the same widths and maps
``x -> y`` directly: the reference an energy model has to beat at equal compute.
"""
from __future__ import annotations

import math


import torch
from torch import nn


def build_model(kind: str, dim: int, hidden: int, layers: int, time_dim: int):
    """``kind`` 'energy' -> :class:`EnergyMLP`; 'feedforward' -> :class:`FeedForward`."""
    if kind == "energy":
        return EnergyMLP(dim, hidden, layers, time_dim)
    if kind == "feedforward":
        return FeedForward(dim, hidden, layers)
    raise ValueError(f"unknown model kind {kind!r}; valid: energy, feedforward")


def sinusoidal_embedding(t, dim: int):
    """Transformer-style embedding of integer timesteps, ``(B,) -> (B, dim)``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device, dtype=torch.float32) / max(1, half - 1))
    args = t.float()[:, None] * freqs[None, :]
    return torch.cat([args.sin(), args.cos()], dim=-1)


class EnergyMLP(nn.Module):
    """``E(x, y, t) = ||f([x, y], t)||^2``: concat -> hidden layers (swish) -> dim.

    Hidden layers after the first are FiLM-modulated by the time embedding
    (``h * (1 + gain) + bias``), as in the published model.
    """

    def __init__(self, dim: int, hidden: int = 512, layers: int = 3, time_dim: int = 128) -> None:
        super().__init__()
        self.dim, self.hidden, self.time_dim = dim, hidden, time_dim
        self.inp = nn.Linear(2 * dim, hidden)
        self.hidden_layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers - 1))
        self.out = nn.Linear(hidden, dim)
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.GELU(),
                                      nn.Linear(time_dim, time_dim))
        self.film = nn.ModuleList(nn.Linear(time_dim, 2 * hidden) for _ in range(layers - 1))

    def energy(self, x, y, t):
        """Per-sample energy, shape ``(B,)``."""
        emb = self.time_mlp(sinusoidal_embedding(t, self.time_dim))
        h = nn.functional.silu(self.inp(torch.cat([x, y], dim=-1)))
        for layer, film in zip(self.hidden_layers, self.film):
            gain, bias = film(emb).chunk(2, dim=-1)
            h = nn.functional.silu(layer(h)) * (1 + gain) + bias
        return self.out(h).pow(2).sum(dim=-1)

    def energy_and_grad(self, x, y, t, *, create_graph: bool = False):
        """``(E, dE/dy)``; with ``create_graph`` the gradient can be trained (the denoiser)."""
        with torch.enable_grad():
            if not y.requires_grad:
                y = y.detach().requires_grad_(True)
            e = self.energy(x, y, t)
            (g,) = torch.autograd.grad(e.sum(), y, create_graph=create_graph)
        return e, g

    def forward(self, x, y, t):
        """The predicted noise: ``dE/dy`` (differentiable, for training)."""
        return self.energy_and_grad(x, y, t, create_graph=True)[1]


class FeedForward(nn.Module):
    """``x -> y`` MLP with the energy model's widths (swish); trained on plain MSE."""

    def __init__(self, dim: int, hidden: int = 512, layers: int = 3) -> None:
        super().__init__()
        mods: list = [nn.Linear(dim, hidden), nn.SiLU()]
        for _ in range(layers - 1):
            mods += [nn.Linear(hidden, hidden), nn.SiLU()]
        mods.append(nn.Linear(hidden, dim))
        self.net = nn.Sequential(*mods)

    def forward(self, x):
        return self.net(x)


class EMA(nn.Module):
    """Exponential moving average of a model's weights; evaluation uses these.

    The decay warms up as ``min(decay, (1 + k) / (10 + k))`` over updates ``k`` so that
    short runs are not evaluated on weights dominated by the initialisation.
    """

    def __init__(self, model: nn.Module, decay: float = 0.995) -> None:
        super().__init__()
        import copy

        self.decay = decay
        self.model = copy.deepcopy(model)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        k = int(self.updates)
        d = min(self.decay, (1 + k) / (10 + k)) if self.decay > 0 else 0.0
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.mul_(d).add_(p.detach(), alpha=1 - d)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)
        self.updates += 1
