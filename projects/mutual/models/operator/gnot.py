"""A small GNOT (Hao et al. 2023, "GNOT: a general neural operator transformer"), 1-D and 2-D.

Why this and not a library model: neuraloperator 2.0.0 ships an attention kernel-integral
layer (``AttentionKernelIntegral``) but no transformer operator for a field-to-field map on a
grid (its attention models, CoDA-NO and GINO, are a multi-physics codomain transformer and a
graph/FNO hybrid); the study's plan names GNOT. What is kept of it:

* tokens: every grid point of the input is a token ``MLP([x, a(x)])``, every query point a token
  ``MLP(x)``;
* each block: the queries cross-attend to the input tokens, then self-attend, then a
  mixture-of-experts feed-forward whose gate depends on the query's coordinates only
  (GNOT's "geometric gating"), each with a residual and layer norm (pre-norm);
* the attention is GNOT's normalised linear attention: queries and keys are softmaxed over
  their features, ``z(x) = sum_i (q(x) . k_i) v_i / sum_i (q(x) . k_i)``. The sums are
  normalised, so they are quadratures of integrals over the domain: the same weights evaluate
  on any grid, and the cost is linear in the points (O(N d^2), 7,225 tokens at 85 x 85).

What is left out: GNOT's several input functions and its irregular meshes (one field on a
uniform grid here), and its heads of different sizes. Queries are the input's own grid, so
the model maps a field on any resolution to a field on the same one, as the FNO and DeepONet do.
"""
from __future__ import annotations

import torch
from torch import nn

from projects.mutual.models.operator.coords import default_periodic, grid

HEADS = 4
EXPERTS = 3


def _mlp(n_in: int, width: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, width), nn.GELU(), nn.Linear(width, n_out))


class LinearAttention(nn.Module):
    """GNOT's normalised linear attention, multi-head, queries (N, Q, d) over sources (N, S, d)."""

    def __init__(self, width: int, heads: int = HEADS):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v = (nn.Linear(width, width) for _ in range(3))
        self.out = nn.Linear(width, width)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        n, m, d = t.shape
        return t.reshape(n, m, self.heads, d // self.heads).transpose(1, 2)   # (N, H, M, d_h)

    def forward(self, queries: torch.Tensor, sources: torch.Tensor) -> torch.Tensor:
        q = self._split(self.q(queries)).softmax(-1)
        k = self._split(self.k(sources)).softmax(-1)
        v = self._split(self.v(sources))
        kv = k.transpose(-2, -1) @ v / k.shape[-2]                            # (N, H, d_h, d_h)
        norm = q @ k.mean(-2, keepdim=True).transpose(-2, -1)                 # (N, H, Q, 1)
        z = (q @ kv) / norm
        return self.out(z.transpose(1, 2).reshape(queries.shape))


class GatedExperts(nn.Module):
    """Feed-forward experts mixed by a softmax gate of the query coordinates."""

    def __init__(self, width: int, dim: int, experts: int = EXPERTS):
        super().__init__()
        self.experts = nn.ModuleList(_mlp(width, 2 * width, width) for _ in range(experts))
        self.gate = _mlp(dim, width, experts)

    def forward(self, h: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        weights = self.gate(coords).softmax(-1)                               # (Q, E)
        outs = torch.stack([e(h) for e in self.experts], dim=-1)              # (N, Q, d, E)
        return (outs * weights[:, None, :]).sum(-1)


class Block(nn.Module):
    def __init__(self, width: int, dim: int):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(4))
        self.cross, self.self_attn = LinearAttention(width), LinearAttention(width)
        self.ffn = GatedExperts(width, dim)

    def forward(self, h: torch.Tensor, src: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
        h = h + self.cross(self.norms[0](h), self.norms[1](src))
        g = self.norms[2](h)
        h = h + self.self_attn(g, g)
        return h + self.ffn(self.norms[3](h), coords)


class GNOT(nn.Module):
    def __init__(self, dim: int, resolution: int, width: int = 64, depth: int = 3, periodic: bool | None = None):
        super().__init__()
        if width % HEADS:
            raise ValueError(f"gnot: width={width} must be a multiple of its {HEADS} heads")
        self.dim = int(dim)
        self.periodic = default_periodic(self.dim) if periodic is None else bool(periodic)
        self.embed_input = _mlp(self.dim + 1, width, width)
        self.embed_query = _mlp(self.dim, width, width)
        self.blocks = nn.ModuleList(Block(width, self.dim) for _ in range(depth))
        self.head = nn.Sequential(nn.LayerNorm(width), _mlp(width, width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        coords = grid(self.dim, x.shape[-1], self.periodic, x.device)            # (P, dim)
        values = x.reshape(x.shape[0], -1, 1)                                    # (N, P, 1)
        src = self.embed_input(torch.cat([coords.expand(x.shape[0], -1, -1), values], dim=-1))
        h = self.embed_query(coords).expand(x.shape[0], -1, -1)
        for block in self.blocks:
            h = block(h, src, coords)
        return self.head(h).reshape(x.shape)
