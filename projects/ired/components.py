"""The run's optional parts as components: floors, mining, early stopping, diagnostics.

Each reports ``success`` with its numbers and figures, or ``disabled`` with the reason and
the override that switches it on. The feedforward baseline has no energy landscape, so
one gate (:data:`ENERGY_ONLY`) disables everything about negatives for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tracking import ComponentResult, Components, Gate, disabled_by

ENERGY_ONLY = Gate(lambda cfg: cfg.model.kind == "feedforward",
                   "model.kind=feedforward has no energy landscape and mines no negatives",
                   "--set model.kind=energy")
NO_MINING = Gate(lambda cfg: cfg.mining.strategy == "none",
                 "mining.strategy is none: no energy-landscape term",
                 "--set mining.strategy=adversarial (or random, mixed)")

COMPONENTS = Components()


@dataclass
class Context:
    """What the providers read: the trainer, the test results and where training stopped."""

    trainer: Any
    test: dict[str, float]
    stopped_at: int | None

    @property
    def cfg(self):
        return self.trainer.cfg

    @property
    def run(self):
        return self.trainer.run


def record_components(trainer, test: dict[str, float], stopped_at: int | None) -> None:
    trainer.run.report_components(COMPONENTS, Context(trainer, test, stopped_at))


@COMPONENTS.provider("reference.floors")
def _floors(ctx: Context) -> ComponentResult:
    from projects.ired.evaluate import floors

    data = ctx.trainer.data
    mean = data.target_mean(ctx.cfg.data.mean_floor_samples)
    f_in, f_ood = floors(data.test.y, mean), floors(data.test_ood.y, mean)
    model = ctx.test["metric.mse.test"]
    d = {"test.zeros": f_in["zeros"], "test.mean": f_in["mean"],
         "test_ood.zeros": f_ood["zeros"], "test_ood.mean": f_ood["mean"],
         "test.model": model, "test.model_over_mean_floor": model / f_in["mean"]}
    ctx.run.results["floors"] = d
    return ComponentResult.success(d, metrics={"metric.floor.zeros.test": f_in["zeros"],
                                               "metric.floor.mean.test": f_in["mean"]})


@COMPONENTS.provider("mining", gates=[ENERGY_ONLY, NO_MINING])
def _mining(ctx: Context) -> ComponentResult:
    m = ctx.cfg.mining
    return ComponentResult.success(
        {"strategy": m.strategy, "opt_steps": m.opt_steps, "ascent_lr": m.ascent_lr,
         "direction": m.direction, "noise_scale": m.noise_scale,
         "adversarial_fraction": m.adversarial_fraction if m.strategy == "mixed" else None})


@COMPONENTS.provider("training.early_stopping")
def _early_stopping(ctx: Context) -> ComponentResult:
    patience = ctx.cfg.train.early_stopping_patience
    if patience == 0:
        return disabled_by("train.early_stopping_patience", 0, enable_value=10)
    s = ctx.trainer.state
    return ComponentResult.success({"patience": patience, "stopped_at": ctx.stopped_at,
                                    "best_step": s.best_step, "best_val": s.best_val})


@COMPONENTS.provider("diagnostics.conditioning", gates=[ENERGY_ONLY],
                     enabled_by="diagnostics.conditioning.enabled")
def _conditioning(ctx: Context) -> ComponentResult:
    from projects.ired import diagnostics as dg

    t, cfg = ctx.trainer, ctx.cfg
    sub = _sub(t.diag_batch, cfg.diagnostics.conditioning.samples)
    data_, metrics, fig = dg.conditioning(t.model, sub, t.schedule, cfg.mining, cfg.mining.strategy,
                                          cfg.data.n)
    return ComponentResult.success(data_, metrics=metrics,
                                   figures=[ctx.run.log_figure(fig, "conditioning_hist.png")])


@COMPONENTS.provider("diagnostics.energy_gap", gates=[ENERGY_ONLY],
                     enabled_by="diagnostics.energy_gap.enabled")
def _energy_gap(ctx: Context) -> ComponentResult:
    return _history(ctx, "energy_gap", ["diag.energy_gap", "diag.mining.grad_norm", "diag.mining.diversity"],
                    "energy gap E(neg) - E(pos), mining gradient norm, negatives' diversity (fixed batch)",
                    {"samples": ctx.cfg.diagnostics.energy_gap.samples})


@COMPONENTS.provider("diagnostics.false_negatives", gates=[ENERGY_ONLY],
                     enabled_by="diagnostics.false_negatives.enabled")
def _false_negatives(ctx: Context) -> ComponentResult:
    return _history(ctx, "false_negatives", ["diag.false_negatives.fraction"],
                    "fraction of mined negatives within the threshold MSE of the true inverse",
                    {"threshold": ctx.cfg.diagnostics.false_negatives.threshold})


def _history(ctx: Context, key: str, names: list[str], title: str, extra: dict) -> ComponentResult:
    """A diagnostic probed at every evaluation: first and final values, and its curve."""
    from projects.ired import diagnostics as dg

    h = ctx.trainer.state.history
    if not h["step"]:
        return ComponentResult.failed("no evaluation ran, so nothing was probed "
                                      "(train.eval_every > train.steps?)")
    data_ = {**extra, "evaluations": len(h["step"])}
    for name in names:
        if name in h:
            data_[f"{name}.final"] = h[name][-1]
            data_[f"{name}.first"] = h[name][0]
    fig = dg.series_figure(h["step"], {n: h[n] for n in names if n in h}, title)
    return ComponentResult.success(data_, figures=[ctx.run.log_figure(fig, f"{key}.png")])


def _sub(batch, k: int):
    from projects.ired.diagnostics import DiagBatch

    return DiagBatch(batch.x[:k], batch.y0[:k], batch.t[:k], batch.noise[:k], batch.seed)
