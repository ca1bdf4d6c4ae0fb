"""The timeline every run logs: loss with events, the index with its triggers."""
from __future__ import annotations

from typing import Any


def timeline(losses: list[float], index: list[float], triggers: list[int], loss_triggers: list[int],
             events: list[Any], tau: float, title: str = "") -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = list(range(1, len(losses) + 1))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    ax1.plot(steps, losses, lw=0.7, color="tab:blue", label="train loss")
    for i, e in enumerate(events):
        end = e.recovered_at if e.recovered_at is not None else e.start + 1
        ax1.axvspan(e.start, end, color="tab:red", alpha=0.2, label="event (start..recovery)" if i == 0 else None)
    ax1.set(ylabel="loss", title=title or "training timeline")
    ax1.legend(loc="upper right", fontsize=8)
    if index:
        ax2.plot(steps[:len(index)], index, lw=0.7, color="tab:purple", label="uncertainty index")
        ax2.axhline(tau, ls="--", color="gray", lw=0.8, label=f"tau = {tau}")
    for i, t in enumerate(triggers):
        ax2.axvline(t, color="tab:orange", lw=1.0, label="trigger (index)" if i == 0 else None)
    for i, t in enumerate(loss_triggers):
        ax2.axvline(t, color="tab:green", lw=0.8, ls=":", label="trigger (loss only)" if i == 0 else None)
    ax2.set(xlabel="step", ylabel="index" if index else "index (monitor off)")
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig
