"""What a mutual run reports after training: per-model results and REPORT.md sections,
the dynamics and learning-curve figures, the label-noise diagnostic.

``run.results["per_model"]`` is the flat record the study's result schema reads (best and
final value of the headline metric per model, test value at the best validation epoch).
"""
from __future__ import annotations

import math
from types import SimpleNamespace
from tracking import ComponentResult, Components, Gate

COMPONENTS = Components()
NAMES = ("a", "b")


def record(run, pair, best, key: str, direction: str) -> None:
    """Results into summary.json, then every component (one REPORT.md section each)."""
    stats = run.metrics.summary()
    per_model = {}
    for m in NAMES:
        b = best.best[m]
        row = {"model": getattr(pair.cfg, f"model_{m}").name, "best_epoch": b["epoch"],
               f"best.{key}.val": b["val"]}
        for split in ("train", "val", "test", "test_clean"):
            s = stats.get(f"metric.{m}.{key}.{split}")
            if s:
                row[f"final.{key}.{split}"] = s["final"]
                row[f"best.{key}.{split}"] = s["best"]
        row.update({f"at_best_val.{k.split('.', 2)[2]}": v for k, v in b["test"].items()})
        per_model[m] = row
    run.results["per_model"] = per_model
    ctx = SimpleNamespace(run=run, pair=pair, cfg=pair.cfg, stats=stats, per_model=per_model, key=key)
    run.report_components(COMPONENTS, ctx)


def _model_section(m: str):
    def provider(ctx) -> ComponentResult:
        row = dict(ctx.per_model[m])
        row["parameters"] = ctx.run.results["models"][m]["parameters"]
        peer = "b" if m == "a" else "a"
        row["peer"] = ctx.per_model[peer]["model"]
        return ComponentResult.success(row)
    return provider


COMPONENTS.provider("model.a")(_model_section("a"))
COMPONENTS.provider("model.b")(_model_section("b"))


@COMPONENTS.provider("figures.dynamics", enabled_by="train.probe_every",
                     why="no probe batch, so no dynamics.* metrics")
def _dynamics_figure(ctx) -> ComponentResult:
    curves = _histories(ctx, [f"dynamics.{m}.{s}" for m in NAMES
                              for s in ("conflict_rate", "grad_cosine", "mask_ratio", "grad_norm_ratio")])
    if not any(curves.values()):
        return ComponentResult.failed("no dynamics.* values were logged (train.probe_every > train.epochs?)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 4, figsize=(15, 3.2))
    for ax, stat in zip(axes, ("conflict_rate", "grad_cosine", "mask_ratio", "grad_norm_ratio")):
        for m in NAMES:
            pts = curves[f"dynamics.{m}.{stat}"]
            ax.plot([s for s, _ in pts], [v for _, v in pts], marker=".",
                    label=f"{m} ({ctx.per_model[m]['model']})")
        ax.set(title=stat.replace("_", " "), xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{ctx.cfg.method.name}: task vs imitation gradient on the probe batch", y=1.04)
    last = {k: v[-1][1] for k, v in curves.items() if v}
    return ComponentResult.success({"final": last}, figures=[ctx.run.log_figure(fig, "dynamics.png")])


@COMPONENTS.provider("figures.curves")
def _curves_figure(ctx) -> ComponentResult:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    key = ctx.key
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.2))
    for color, m in zip(("C0", "C1"), NAMES):
        label = f"{m} ({ctx.per_model[m]['model']})"
        for split, style in (("val", "-"), ("test", "--")):
            pts = _histories(ctx, [f"metric.{m}.{key}.{split}"])[f"metric.{m}.{key}.{split}"]
            ax1.plot([s for s, _ in pts], [v for _, v in pts], style, color=color, label=f"{label} {split}")
        for part, style in (("task", "-"), ("imitation", ":")):
            pts = _histories(ctx, [f"loss.{m}.{part}"])[f"loss.{m}.{part}"]
            ax2.plot([s for s, _ in pts], [v for _, v in pts], style, color=color, label=f"{label} {part}")
    ax1.set(title=key, xlabel="epoch")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set(title="training losses (epoch means)", xlabel="epoch", yscale="log")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return ComponentResult.success({}, figures=[ctx.run.log_figure(fig, "curves.png")])


@COMPONENTS.provider("diagnostics.noisy_labels", gates=[Gate(
    lambda cfg: cfg.perturbation.label_noise == 0,
    "perturbation.label_noise is 0: no flipped labels to look at",
    "--set condition=noise40 (or noise20)")])
def _noisy_labels(ctx) -> ComponentResult:
    """Does the method imitate the peer more on the samples whose label was flipped? A
    selective method should: there the own (wrong-label) loss is high."""
    data = {}
    for m in NAMES:
        noisy = ctx.stats.get(f"diag.{m}.mask_ratio_noisy", {}).get("final")
        overall = ctx.stats.get(f"diag.{m}.mask_ratio", {}).get("final")
        data[f"{m}.mask_ratio_on_flipped_labels"] = noisy
        data[f"{m}.mask_ratio_overall"] = overall
    data["label_noise"] = ctx.cfg.perturbation.label_noise
    return ComponentResult.success(data)


def _histories(ctx, keys: list[str]) -> dict[str, list[tuple[int, float]]]:
    """Metric histories back from the store (flushed first): the figures draw what MLflow shows."""
    ctx.run.metrics.flush()
    out = {}
    for k in keys:
        hist = ctx.run.client.get_metric_history(ctx.run.run_id, k)
        out[k] = sorted((h.step, h.value) for h in hist if not math.isnan(h.value))
    return out
