"""Prediction MSE on fixed sets, and the two floors every result is read against.

Evaluation draws its sampling noise from a generator re-seeded on each call, so the same
weights always give the same number, whatever happened to the training stream before.
"""
from __future__ import annotations

import torch

from projects.ired.diffusion import Schedule, sample


@torch.no_grad()
def predict(model, kind: str, x, schedule: Schedule | None = None, *, inference_steps: int = 5,
            seed: int = 0, batch_size: int = 1024, reject_uphill: bool = True):
    """Answers for problems ``x``: sampling for the energy model, a forward pass otherwise."""
    if kind == "feedforward":
        return torch.cat([model(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])
    g = torch.Generator().manual_seed(int(seed))
    outs = [sample(model, x[i:i + batch_size], schedule, inference_steps=inference_steps,
                   generator=g, reject_uphill=reject_uphill)
            for i in range(0, x.shape[0], batch_size)]
    return torch.cat(outs)


def mse(model, kind: str, x, y, schedule: Schedule | None = None, **kw) -> float:
    """Mean squared error per entry of the predicted inverse."""
    was_training = model.training
    model.eval()
    try:
        return float(((predict(model, kind, x, schedule, **kw) - y) ** 2).mean())
    finally:
        model.train(was_training)


def floors(y_test, train_mean) -> dict[str, float]:
    """What trivial predictors score on the same test targets: zeros, per-entry mean."""
    return {"zeros": float((y_test ** 2).mean()),
            "mean": float(((y_test - train_mean[None, :]) ** 2).mean())}
