"""DLinear (Zeng et al. 2023, "Are Transformers Effective for Time Series Forecasting?"):
a moving-average trend and the seasonal remainder, each mapped to the horizon by one linear
layer over time, shared by the channels (the paper's non-individual variant)."""
from __future__ import annotations

import torch
from torch import nn


def moving_average(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """Centred mean over ``kernel`` steps of (N, L, C), the ends padded by repetition."""
    front, back = (kernel - 1) // 2, kernel // 2
    padded = torch.cat([x[:, :1].expand(-1, front, -1), x, x[:, -1:].expand(-1, back, -1)], dim=1)
    return padded.unfold(1, kernel, 1).mean(-1)


class DLinear(nn.Module):
    def __init__(self, lookback: int, horizon: int, channels: int, outputs: list[int], kernel: int = 25):
        super().__init__()
        self.kernel = max(1, min(kernel, lookback - (1 - lookback % 2)))  # odd, at most the lookback
        self.register_buffer("outputs", torch.tensor(outputs, dtype=torch.long), persistent=False)
        self.seasonal, self.trend = nn.Linear(lookback, horizon), nn.Linear(lookback, horizon)
        for layer in (self.seasonal, self.trend):  # the paper's start: the window mean
            nn.init.constant_(layer.weight, 1.0 / lookback)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.index_select(2, self.outputs)
        trend = moving_average(x, self.kernel)
        out = self.seasonal((x - trend).transpose(1, 2)) + self.trend(trend.transpose(1, 2))
        return out.transpose(1, 2)
