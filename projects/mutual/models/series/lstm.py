"""An LSTM encoder over the lookback window and a linear head from its last hidden state to
the whole horizon at once (direct multi-step forecasting, not recursive)."""
from __future__ import annotations

import torch
from torch import nn


class LSTMForecaster(nn.Module):
    def __init__(self, lookback: int, horizon: int, channels: int, outputs: list[int], width: int = 64,
                 depth: int = 1, dropout: float = 0.0):
        super().__init__()
        self.horizon, self.n_out = horizon, len(outputs)
        self.lstm = nn.LSTM(channels, width, num_layers=depth, batch_first=True,
                            dropout=dropout if depth > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(width, horizon * self.n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h, _) = self.lstm(x)
        return self.head(self.drop(h[-1])).view(x.shape[0], self.horizon, self.n_out)
