"""Figures a person would rather look at than read: latent space, reconstructions,
mixture weights over epochs, samples per component, the tau matrix.

Each function returns a matplotlib figure (the run logs and closes it).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latent_space(z: np.ndarray, labels: np.ndarray):
    """E_q[z] in 2-D coloured by label: the latent itself when 2-D, else its first two PCs.

    A 1-D latent has no second axis to project on, so this raises rather than drawing a
    picture that pretends to be the same kind of plot.
    """
    d = z.shape[1]
    if d < 2:
        raise ValueError(f"the latent-space figure is a 2-D projection and needs model.latent_dim >= 2, "
                         f"got latent_dim={d}")
    if d == 2:
        xy, how = z, "latent (2-D)"
    else:
        centred = z - z.mean(0)
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        xy = centred @ vt[:2].T
        share = float((s[:2] ** 2).sum() / max((s ** 2).sum(), 1e-12))
        how = f"PCA, first 2 of {d} dims ({share:.0%} of variance)"
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap="tab10", s=8, alpha=0.8)
    fig.colorbar(sc, ax=ax, label="label")
    ax.set(title="latent space E[z|x] (held-out images)", xlabel=f"{how.split(',')[0]} 1",
           ylabel=f"{how.split(',')[0]} 2")
    return fig, how


def _mosaic(rows: list[np.ndarray], shape: Sequence[int], pad: int = 1) -> np.ndarray:
    """Images [rows][cols, H*W] -> one array with a blank pad between tiles (one imshow is
    far faster than a subplot per image)."""
    h, w = shape
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    out = np.full((n_rows * (h + pad) - pad, n_cols * (w + pad) - pad), np.nan)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            out[i * (h + pad):i * (h + pad) + h, j * (w + pad):j * (w + pad) + w] = img.reshape(h, w)
    return out


def reconstructions(x: np.ndarray, rec: np.ndarray, shape: Sequence[int]):
    """Top row the inputs, bottom row the decoder means of their most likely component."""
    plt = _plt()
    n = len(x)
    fig, ax = plt.subplots(figsize=(0.7 * n + 1.2, 2.0))
    ax.imshow(_mosaic([x, rec], shape), cmap="gray_r", vmin=0, vmax=1)
    h = shape[0]
    ax.set_yticks([h / 2 - 0.5, 1.5 * h + 0.5], ["input", "reconstruction"])
    ax.set_xticks([])
    ax.set_title("reconstructions (held-out images)", fontsize=9)
    return fig


def component_samples(grid: list[np.ndarray], shape: Sequence[int], weights: np.ndarray):
    """One row per mixture component: images decoded from z ~ p(z|c)."""
    plt = _plt()
    k, per = len(grid), len(grid[0])
    fig, ax = plt.subplots(figsize=(0.6 * per + 1.6, 0.6 * k + 0.8))
    ax.imshow(_mosaic(grid, shape), cmap="gray_r", vmin=0, vmax=1)
    h = shape[0]
    ax.set_yticks([c * (h + 1) + h / 2 - 0.5 for c in range(k)],
                  [f"c={c} ({weights[c]:.2f})" for c in range(k)], fontsize=7)
    ax.set_xticks([])
    ax.set_title("samples from p(z|c), per component\n(average responsibility in brackets)", fontsize=9)
    return fig


def mixture_weights(pi: np.ndarray, resp: np.ndarray, epochs: Sequence[int] | None = None):
    """pi (the prior's weights) and the average responsibilities, per component over epochs."""
    plt = _plt()
    x = np.asarray(epochs) if epochs is not None and len(epochs) == len(pi) else np.arange(1, len(pi) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, values, title in ((axes[0], pi, "prior weights pi"),
                              (axes[1], resp, "average responsibility q(c|x)")):
        ax.stackplot(x, values.T, labels=[f"c={c}" for c in range(values.shape[1])],
                     colors=plt.cm.tab20(np.linspace(0, 1, values.shape[1])))
        ax.set(title=title, xlabel="epoch", ylim=(0, 1))
    axes[0].set_ylabel("share")
    if pi.shape[1] <= 20:
        axes[1].legend(fontsize=6, ncol=2, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return fig


def tau_heatmap(tau: np.ndarray):
    """tau[c, y]: which label each component stands for, from the labelled images."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 0.3 * tau.shape[0] + 1.5))
    im = ax.imshow(tau, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label="tau[c, y]")
    ax.set(title="tau-classifier: component -> label", xlabel="label y", ylabel="component c",
           xticks=range(tau.shape[1]), yticks=range(tau.shape[0]))
    return fig
