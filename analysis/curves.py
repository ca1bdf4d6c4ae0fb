"""Learning curves per group: mean ± std over seeds at each step, and best vs final.

Runs of one group do not always log the same steps (an eval every 20 steps in one config,
every 10 in another; a crashed seed stops early). The band at a step uses the runs that
logged that step, and the number of runs behind each point is kept (``n``) so a band that
thins out towards the end is visible rather than hidden.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


def band_frame(curves: "pd.DataFrame", labels: Mapping[str, str], metric: str) -> "pd.DataFrame":
    """``group, step, mean, std, n`` from a :func:`analysis.query.curves_frame` long table."""
    import pandas as pd

    part = curves[(curves["metric"] == metric) & curves["run_id"].isin(list(labels))]
    if part.empty:
        return pd.DataFrame(columns=["group", "step", "mean", "std", "n"])
    # one value per run and step (a step logged twice counts once), then across runs
    per_run = part.groupby(["run_id", "step"], as_index=False)["value"].mean()
    per_run["group"] = per_run["run_id"].map(dict(labels))
    out = (per_run.groupby(["group", "step"], sort=True)["value"]
           .agg(mean="mean", std=lambda v: v.std(ddof=1), n="count").reset_index())
    return out


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    """PNG at ``path`` (folders made), figure closed: long analyses must not pile up figures."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def plot_bands(bands: "pd.DataFrame", metric: str, path: str | Path, *, order: list[str] | None = None,
               title: str | None = None) -> Path:
    """One line per group with a shaded ±1 std band; log y when the values span decades."""
    import numpy as np

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    groups = order or sorted(bands["group"].unique())
    positive = bool((bands["mean"] > 0).all()) if len(bands) else False
    for g in groups:
        b = bands[bands["group"] == g]
        if b.empty:
            continue
        std = b["std"].fillna(0.0).to_numpy()
        mean = b["mean"].to_numpy()
        line, = ax.plot(b["step"], mean, label=f"{g} (n={int(b['n'].max())})",
                        marker="o" if len(b) <= 30 else None, markersize=3)
        low = mean - std
        if positive:
            low = np.maximum(low, mean * 1e-3)
        ax.fill_between(b["step"], low, mean + std, color=line.get_color(), alpha=0.2, linewidth=0)
    if positive and len(bands) and bands["mean"].max() / max(bands["mean"].min(), 1e-300) > 100:
        ax.set_yscale("log")
    ax.set(xlabel="step", ylabel=metric, title=title or f"{metric}: mean ± std over seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_best_vs_final(final: "pd.DataFrame", best: "pd.DataFrame", metric: str, path: str | Path) -> Path:
    """Per group, mean ± std of the final and of the best value: how much early stopping would buy."""
    import numpy as np

    plt = _pyplot()
    groups = list(final["group"])
    x = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(max(5.5, 1.1 * len(groups) + 2), 3.8))
    for offset, frame, name in ((-0.15, final, "final"), (0.15, best, "best")):
        f = frame.set_index("group").reindex(groups)
        ax.errorbar(x + offset, f["mean"], yerr=f["std"].fillna(0.0), fmt="o", capsize=4, label=name)
    ax.set_xticks(x, groups, rotation=20 if len(groups) > 3 else 0, ha="right" if len(groups) > 3 else "center")
    ax.set(ylabel=metric, title="final vs best value (mean ± std over seeds)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_rank_heatmap(ranks: "pd.DataFrame", metric: str, path: str | Path) -> Path:
    """Seeds x methods rank matrix: a consistent ranking shows as straight colour columns."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * ranks.shape[1] + 2), max(2.5, 0.35 * ranks.shape[0] + 1.5)))
    im = ax.imshow(ranks.to_numpy(dtype=float), cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(ranks.shape[1]), list(ranks.columns), rotation=20, ha="right")
    ax.set_yticks(range(ranks.shape[0]), [f"seed {s}" for s in ranks.index])
    for i in range(ranks.shape[0]):
        for j in range(ranks.shape[1]):
            value = float(ranks.iat[i, j])
            light = value <= (1 + ranks.shape[1]) / 2       # viridis_r: low ranks are light cells
            ax.text(j, i, f"{value:g}", ha="center", va="center", color="black" if light else "white", fontsize=8)
    fig.colorbar(im, ax=ax, label="rank (1 = best)")
    ax.set_title(f"per-seed ranks on {metric}")
    return _save(fig, path)


def plot_cd_diagram(mean_rank: "pd.Series", nemenyi_p: "pd.DataFrame", cd: float, metric: str, n_blocks: int,
                    path: str | Path) -> Path:
    """Demšar's critical-difference diagram (scikit-posthocs draws it): methods on the rank
    axis, a bar joining those Nemenyi's test does not separate."""
    import scikit_posthocs as sp

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 1.2 + 0.3 * len(mean_rank)))
    sp.critical_difference_diagram(mean_rank.to_dict(), nemenyi_p, ax=ax, alpha=0.05)
    ax.set_title(f"average rank on {metric} over {n_blocks} blocks (Nemenyi CD = {cd:.2f} at alpha 0.05)",
                 fontsize=9)
    return _save(fig, path)
