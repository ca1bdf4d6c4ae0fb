"""The toy task's optional parts, each reported as success, disabled (with the key that turns
it on) or failed, never silently missing: weight norms, a residual histogram, and a probe that
raises on purpose (a failed component does not fail the run)."""
from __future__ import annotations

from tracking import ComponentResult, Components

COMPONENTS = Components()


@COMPONENTS.provider("diagnostics.weight_norms", enabled_by="diagnostics.weight_norms")
def _weight_norms(ctx) -> ComponentResult:
    norms = {f"diag.weight_norm.layer{i}": float(p.detach().norm()) for i, p in
             enumerate(q for q in ctx.model.parameters() if q.dim() == 2)}
    return ComponentResult.success({"layers": len(norms)}, metrics=norms)


@COMPONENTS.provider("diagnostics.residuals", enabled_by="diagnostics.residuals", why="it draws a figure")
def _residuals(ctx) -> ComponentResult:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    with torch.no_grad():
        res = (ctx.model(ctx.xva) - ctx.yva).flatten().cpu().numpy()
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.hist(res, bins=30)
    ax.set(title="validation residuals", xlabel="prediction - target", ylabel="count")
    path = ctx.run.log_figure(fig, "residuals.png")
    return ComponentResult.success({"mean": float(res.mean()), "std": float(res.std())},
                                   figures=[path])


@COMPONENTS.provider("diagnostics.broken_probe", enabled_by="diagnostics.broken_probe",
                     why="a deliberately failing probe")
def _broken(ctx) -> ComponentResult:
    raise ValueError("probe exploded on purpose")
