"""The dynamics task's optional parts, each reported as success, disabled (with the key that
turns it on) or failed: the monitor's anticipation of instability events and the timeline figure."""
from __future__ import annotations

from tracking import ComponentResult, Components

COMPONENTS = Components()


@COMPONENTS.provider("monitor", enabled_by="monitor.enabled", why="the uncertainty index is off")
def _monitor(ctx) -> ComponentResult:
    """Trigger precision/recall against events, index vs the loss-only trigger (ablation D)."""
    t = ctx.t
    ant = t.anticipation()
    metrics = {f"dynamics.anticipation.{who}.{k}": v for who, d in ant.items() for k, v in d.items()
               if k in ("precision", "recall", "mean_lead") and v == v}
    steps = max(1, len(t.state.losses))
    data = {**{f"{who}.{k}": v for who, d in ant.items() for k, v in d.items()},
            "lead_window": t.cfg.events.lead, "triggers": t.state.triggers,
            "monitor_ms_per_step_this_process": 1e3 * t.monitor_s / steps}
    return ComponentResult.success(data, metrics=metrics)


@COMPONENTS.provider("figures.timeline")
def _timeline(ctx) -> ComponentResult:
    from projects.dynamics.figures import timeline

    t = ctx.t
    fig = timeline(t.state.losses, t.state.index, t.state.triggers, t.state.loss_triggers,
                   t.events.events, t.cfg.monitor.tau, title=f"dynamics / {t.cfg.train.stabiliser}")
    return ComponentResult.success({"steps": len(t.state.losses)}, figures=[ctx.run.log_figure(fig, "timeline.png")])
