"""Entry point of the ``dynamics`` task: train a small GPT and watch its dynamics.

``python -m projects.dynamics.train --config spiky --set train.stabiliser=zclip`` (or
``labrun run dynamics ...``, or ``mlflow run . -e dynamics -P config=spiky``).

Every step logs the training loss, the monitor's signals and index (``dynamics.*``), the
trigger and the event flags; every ``train.eval_every`` steps the validation perplexity.
At the end: the cost report (events per 100k steps, time to recover, wasted-FLOPs share),
trigger precision/recall against events (index vs loss-only), and the timeline figure.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

from tracking import ComponentResult, Components, load_config, start_run

from projects.dynamics.config import Config  # noqa: F401  (the schema is the contract)

COMPONENTS = Components()


def main(argv: list[str] | None = None) -> None:
    import sys
    from pathlib import Path

    direct = Path(sys.argv[0]).name == "train.py" and Path(sys.argv[0]).parent.name == "dynamics"
    cfg = load_config(Config, argv, prog="python -m projects.dynamics.train" if direct else None)
    with start_run(cfg) as run:
        _train(cfg, run)


def _train(cfg: Config, run) -> None:
    import torch

    from projects.dynamics.trainer import Trainer

    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    t = Trainer(cfg, run.device)
    run.track_state(**t.objects())
    run.log.info("dynamics: stabiliser=%s params=%d vocab=%d corpus=%d tokens", cfg.train.stabiliser,
                 t.model.n_params(), t.corpus.vocab.size, len(t.corpus.train))
    loop = run.steps(cfg.train.steps, desc=f"dynamics/{cfg.train.stabiliser}")
    for step in loop:
        metrics = t.step()
        if step % cfg.train.eval_every == 0 or step == cfg.train.steps:
            metrics.update(t.evaluate())
            run.epoch_line(step, cfg.train.steps, metrics, loop.elapsed_s,
                           keys=["loss.train", "loss.val", "metric.perplexity.val", "dynamics.index"])
        run.log_metrics(metrics, step=step)
        if cfg.train.sleep_s:
            time.sleep(cfg.train.sleep_s)
    _finish(t, run, last=max(loop.last, loop.start - 1))


def _finish(t, run, last: int) -> None:
    report = t.costs()
    run.log_metrics(report.metrics(), step=last)
    run.results.update({"events": report.events, "events_per_100k": report.per_100k,
                        "unrecovered": report.unrecovered, "time_to_recover": report.time_to_recover,
                        "wasted_flops_share": report.wasted_share, "total_flops": report.total_flops,
                        "event_steps": [e.start for e in t.events.events],
                        "final_val_perplexity": _final_ppl(t)})
    run.report_components(COMPONENTS, SimpleNamespace(run=run, t=t, cfg=t.cfg))


def _final_ppl(t) -> float:
    import math

    return math.exp(min(t.state.val[-1][1], 50.0)) if t.state.val else t.evaluate()["metric.perplexity.val"]


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


if __name__ == "__main__":
    main()
