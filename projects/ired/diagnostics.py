"""Diagnostics of mined negatives: are they hard, diverse, and really wrong?

Everything is measured on one fixed diagnostic batch (its own generator: problems,
timesteps and noise are the same at every evaluation), so a change in a diagnostic
series is a change in the model, never in the batch. For ``none`` the negatives are the
random ones (what the baseline's landscape would be tested against).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from projects.ired.data import derived_generator, flat, make_matrices
from projects.ired.diffusion import Schedule
from projects.ired.mining import mine


@dataclass
class DiagBatch:
    x: torch.Tensor
    y0: torch.Tensor
    t: torch.Tensor
    noise: torch.Tensor
    seed: int

    @classmethod
    def make(cls, n: int, count: int, timesteps: int, seed: int, device) -> "DiagBatch":
        g = derived_generator(seed, "diagnostics")
        x, y0 = flat(*make_matrices(n, count, g))
        t = torch.randint(0, timesteps, (count,), generator=g)
        noise = torch.randn(y0.shape, generator=g)
        return cls(x.to(device), y0.to(device), t.to(device), noise.to(device), seed)


def mine_fixed(model, batch: DiagBatch, schedule: Schedule, mining_cfg, strategy: str):
    g = derived_generator(batch.seed, "diagnostics")  # mining noise, same at every call
    return mine(strategy, model, batch.x, batch.y0, batch.t, batch.noise, schedule, mining_cfg, g)


def probe(model, batch: DiagBatch, schedule: Schedule, mining_cfg, strategy: str,
          fn_threshold: float) -> dict[str, float]:
    """Energy gap, mining gradient norm, diversity and false-negative fraction, as metrics."""
    neg = mine_fixed(model, batch, schedule, mining_cfg, strategy)
    with torch.no_grad():
        pos = schedule.q_sample(batch.y0, batch.t, batch.noise)
        e_pos = model.energy(batch.x, pos, batch.t)
        e_neg = model.energy(batch.x, neg.y_neg, batch.t)
        out = {
            "diag.energy_gap": float((e_neg - e_pos).mean()),
            "diag.energy_gap.frac_positive": float(((e_neg - e_pos) > 0).float().mean()),
            "diag.mining.diversity": mean_pairwise_distance(neg.x0_neg),
            "diag.false_negatives.fraction": false_negative_fraction(neg.x0_neg, batch.y0, fn_threshold),
        }
    if neg.grad_norms:
        out["diag.mining.grad_norm"] = float(sum(neg.grad_norms) / len(neg.grad_norms))
        out["diag.mining.energy_drop"] = float((neg.start_energy - neg.end_energy).mean())
    return out


def mean_pairwise_distance(v: torch.Tensor) -> float:
    """Mean Euclidean distance between distinct rows (0 for fewer than two)."""
    if v.shape[0] < 2:
        return 0.0
    d = torch.cdist(v, v)
    m = v.shape[0]
    return float(d.sum() / (m * (m - 1)))


def false_negative_fraction(x0_neg: torch.Tensor, y0: torch.Tensor, threshold: float) -> float:
    """Fraction of negatives whose per-entry MSE to the true answer is below ``threshold``.

    Such a negative is nearly a correct answer, yet the loss pushes its energy up.
    """
    err = ((x0_neg - y0) ** 2).mean(dim=-1)
    return float((err < threshold).float().mean())


def matrix_stats(flat_mats: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
    """log10 |det|, log10 condition number and log10 smallest singular value per matrix."""
    m = flat_mats.detach().double().cpu().reshape(-1, n, n)
    s = torch.linalg.svdvals(m)
    smin = s[:, -1].clamp_min(1e-300)
    _, logabsdet = torch.linalg.slogdet(m)
    return {"log10_abs_det": logabsdet / torch.log(torch.tensor(10.0, dtype=torch.float64)),
            "log10_cond": torch.log10(s[:, 0] / smin),
            "log10_smin": torch.log10(smin)}


def conditioning(model, batch: DiagBatch, schedule: Schedule, mining_cfg, strategy: str, n: int):
    """Positives (true inverses) vs mined negatives: summary numbers and a histogram figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    neg = mine_fixed(model, batch, schedule, mining_cfg, strategy)
    pos_s, neg_s = matrix_stats(batch.y0, n), matrix_stats(neg.x0_neg, n)
    data, metrics = {"samples": int(batch.y0.shape[0]), "negatives_from": strategy if strategy != "none"
                     else "random (strategy none trains without negatives)"}, {}
    for key in pos_s:
        for side, stats in (("pos", pos_s), ("neg", neg_s)):
            v = stats[key]
            v = v[torch.isfinite(v)]
            med = float(v.median()) if v.numel() else float("nan")
            data[f"{side}.{key}.median"] = med
            metrics[f"diag.conditioning.{side}.{key}"] = med
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    titles = {"log10_abs_det": "log10 |det|", "log10_cond": "log10 condition number",
              "log10_smin": "log10 smallest singular value"}
    for ax, key in zip(axes, pos_s):
        p, q = pos_s[key], neg_s[key]
        p, q = p[torch.isfinite(p)].numpy(), q[torch.isfinite(q)].numpy()
        bins = np.histogram_bin_edges(np.concatenate([p, q]), bins=40)
        ax.hist(p, bins=bins, alpha=0.6, label="positives (inv A)")
        ax.hist(q, bins=bins, alpha=0.6, label=f"negatives ({strategy})")
        ax.set(title=titles[key], ylabel="count")
    axes[0].legend(fontsize=8)
    fig.suptitle("conditioning of positives vs mined negatives (clean space)", y=1.03)
    return data, metrics, fig


def series_figure(steps: list[int], series: dict[str, list[float]], title: str):
    """One small panel per series (their scales differ), sharing the step axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 3), squeeze=False)
    for ax, (name, values) in zip(axes[0], series.items()):
        ax.plot(steps[:len(values)], values, marker="o", ms=3)
        ax.set(title=name, xlabel="step")
        if min(values) < 0 < max(values):
            ax.axhline(0, color="grey", lw=0.5)
    fig.suptitle(title, y=1.04)
    return fig
