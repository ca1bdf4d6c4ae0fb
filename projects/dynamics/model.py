"""A small GPT-style decoder that reports what the monitor reads from inside it.

Attention is written out (not ``scaled_dot_product_attention``) because the monitor needs
the attention probabilities for their entropy. Each forward pass leaves, on the model,
the mean attention entropy per layer and (when asked) per-layer activation summaries;
they are detached scalars, so reading them costs no memory for activations.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def feature_entropy(h: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of how activation energy spreads over channels: p_j = mean|h_j| / sum.

    Scale-free, so it moves when the *shape* of a layer's state changes (a few channels
    blowing up, or collapse), not when its overall magnitude drifts."""
    e = h.detach().float().abs().reshape(-1, h.shape[-1]).mean(0)
    p = e / e.sum().clamp_min(1e-12)
    return -(p * p.clamp_min(1e-12).log()).sum()


class Block(nn.Module):
    def __init__(self, d: int, heads: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, mlp_ratio * d), nn.Linear(mlp_ratio * d, d)
        self.drop = nn.Dropout(dropout)
        self.attn_entropy = torch.zeros(())
        self.mlp_hidden: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        att = att.masked_fill(~mask[:t, :t], float("-inf")).softmax(-1)
        with torch.no_grad():
            p = att.detach().float()
            self.attn_entropy = -(p * p.clamp_min(1e-12).log()).sum(-1).mean()
        y = (self.drop(att) @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.drop(self.proj(y))
        hidden = F.gelu(self.fc(self.ln2(x)))
        self.mlp_hidden = hidden.detach()
        return x + self.drop(self.out(hidden))


class GPT(nn.Module):
    def __init__(self, vocab: int, context: int, layers: int, d_model: int, heads: int,
                 mlp_ratio: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.context = context
        self.tok, self.pos = nn.Embedding(vocab, d_model), nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList(Block(d_model, heads, mlp_ratio, dropout) for _ in range(layers))
        self.ln = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab, bias=False)
        self.head.weight = self.tok.weight  # tied, as in GPT-2
        self.register_buffer("mask", torch.ones(context, context, dtype=torch.bool).tril(), persistent=False)
        self.apply(self._init)
        self.layer_outputs: list[torch.Tensor] = []

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor, keep_layers: bool = False) -> torch.Tensor:
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        self.layer_outputs = []
        for block in self.blocks:
            x = block(x, self.mask)
            if keep_layers:
                self.layer_outputs.append(x.detach())
        return self.head(self.ln(x))

    def n_params(self) -> int:
        """Parameters counted once (the tied head is the embedding)."""
        return sum(p.numel() for p in self.parameters())

    def attention_entropy(self) -> float:
        """Mean attention entropy over layers of the last forward pass."""
        return float(torch.stack([b.attn_entropy for b in self.blocks]).mean())

    def activation_entropy(self) -> float:
        """Feature entropy of the last block's MLP hidden state (the monitor's key layer)."""
        h = self.blocks[-1].mlp_hidden
        return float(feature_entropy(h)) if h is not None else 0.0

    def layer_summaries(self) -> dict[str, float]:
        """``diag.act.layer{i}.{mean,std,entropy}`` of each block's output (needs keep_layers)."""
        out = {}
        for i, h in enumerate(self.layer_outputs):
            h = h.float()
            out[f"diag.act.layer{i}.mean"] = float(h.mean())
            out[f"diag.act.layer{i}.std"] = float(h.std())
            out[f"diag.act.layer{i}.entropy"] = float(feature_entropy(h))
        return out


def flops_per_token(n_params: int, layers: int, context: int, d_model: int) -> float:
    """Training FLOPs per token: 6N for the weights plus the attention term (Kaplan et al. 2020)."""
    return 6.0 * n_params + 6.0 * layers * context * d_model
