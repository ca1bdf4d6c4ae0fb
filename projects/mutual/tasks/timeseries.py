"""Long-horizon forecasting: a window of ``series.lookback`` steps -> the next ``series.horizon``
steps, learned by a heterogeneous pair (DLinear, LSTM, a patched Transformer encoder).

Everything is in the units the loader standardised to (each channel's training mean and std).
The task loss per element is the MSE of a window's forecast (``series.granularity=sample``) or
of each forecast time step, averaged over channels (``step``); the imitation divergence is the
MSE between the two models' forecasts, shaped like the loss. Metrics per window: ``mse`` (the
headline, lower is better) and ``mae``.

Under ``horizon_shift`` the test targets are longer than the models' output: in eval mode a
model's forecast is fed back as its next input until the test horizon is covered (recursive
rollout). Losses, divergences and metrics compare the leading steps that both sides have, so a
validation split or a frozen weak peer (eval mode, rolled out) is scored on the training horizon.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from projects.mutual.tasks.base import Task


def rollout(model: nn.Module, inputs: torch.Tensor, first: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` forecast steps from ``first`` (the model's direct forecast of ``inputs``), each
    further block forecast from the last ``lookback`` steps of inputs and forecasts so far."""
    lookback, outs, window, done = inputs.shape[1], [first], inputs, first.shape[1]
    while done < steps:
        window = torch.cat([window, outs[-1]], dim=1)[:, -lookback:]
        outs.append(model(window))
        done += outs[-1].shape[1]
    return torch.cat(outs, dim=1)[:, :steps]


def _crop(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = min(a.shape[1], b.shape[1])
    return a[:, :n], b[:, :n]


class TimeSeriesTask(Task):
    name = "timeseries"
    headline: ClassVar[str] = "mse"
    headline_direction: ClassVar[str] = "min"

    def __init__(self, cfg):
        super().__init__(cfg)
        s = cfg.series
        self.steps = s.test_horizon if cfg.perturbation.horizon_shift else s.horizon
        """Steps an eval-mode forward produces (the longest target of any split)."""

    def load_data(self):
        from projects.mutual.data.series.loader import load_series

        c = self.cfg
        return load_series(c.data.dataset, c.series, c.perturbation, path=c.data.path,
                           split_seed=c.data.split_seed)

    def build_models(self, data: Any) -> tuple[nn.Module, nn.Module]:
        from projects.mutual.models import build_forecaster

        args = (data.lookback, data.horizon, data.input_shape[1], list(data.outputs))
        a = build_forecaster(self.cfg.model_a.name, *args, **self.cfg.model_a.sizes())
        b = build_forecaster(self.cfg.model_b.name, *args, **self.cfg.model_b_sizes())
        return a, b

    def forward(self, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        out = model(inputs)
        if model.training or out.shape[1] >= self.steps:
            return out
        return rollout(model, inputs, out, self.steps)

    def _mse(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        err = (a - b).pow(2)
        return err.mean(2) if self.cfg.series.granularity == "step" else err.mean((1, 2))

    def per_sample_loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self._mse(*_crop(outputs, targets))

    def divergence(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        return self._mse(*_crop(student, teacher))

    def metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        pred, true = _crop(outputs, targets)
        return {"mse": (pred - true).pow(2).mean((1, 2)), "mae": (pred - true).abs().mean((1, 2))}
