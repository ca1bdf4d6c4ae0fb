"""The run's optional parts as components: floors, mining, early stopping, diagnostics.

Each reports ``success`` with its numbers and figures, or ``disabled`` with the reason and
the override that switches it on (the feedforward baseline has no energy landscape, so
everything about negatives is disabled for it).
"""
from __future__ import annotations

from tracking import ComponentResult

from projects.ired.config import Config


def record_components(cfg: Config, run, data, model, schedule, state, diag_batch, test) -> None:
    from projects.ired import diagnostics as dg
    from projects.ired.evaluate import floors

    ff = cfg.model.kind == "feedforward"
    ff_reason = "model.kind=feedforward has no energy landscape and mines no negatives"
    ff_enable = "--set model.kind=energy"

    def floors_component():
        mean = data.target_mean(cfg.data.mean_floor_samples)
        f_in, f_ood = floors(data.test.y, mean), floors(data.test_ood.y, mean)
        d = {"test.zeros": f_in["zeros"], "test.mean": f_in["mean"],
             "test_ood.zeros": f_ood["zeros"], "test_ood.mean": f_ood["mean"],
             "test.model": test["metric.mse.test"],
             "test.model_over_mean_floor": test["metric.mse.test"] / f_in["mean"]}
        run.results["floors"] = d
        return ComponentResult.success(d, metrics={"metric.floor.zeros.test": f_in["zeros"],
                                                   "metric.floor.mean.test": f_in["mean"]})

    run.component("reference.floors", floors_component)

    if ff:
        run.component("mining", ComponentResult.disabled(ff_reason, enable=ff_enable))
    elif cfg.mining.strategy == "none":
        run.component("mining", ComponentResult.disabled(
            "mining.strategy is none: no energy-landscape term",
            enable="--set mining.strategy=adversarial (or random, mixed)"))
    else:
        m = cfg.mining
        run.component("mining", ComponentResult.success(
            {"strategy": m.strategy, "opt_steps": m.opt_steps, "ascent_lr": m.ascent_lr,
             "direction": m.direction, "noise_scale": m.noise_scale,
             "adversarial_fraction": m.adversarial_fraction if m.strategy == "mixed" else None}))

    if cfg.train.early_stopping_patience == 0:
        run.component("training.early_stopping", ComponentResult.disabled(
            "train.early_stopping_patience is 0", enable="--set train.early_stopping_patience=10"))
    else:
        run.component("training.early_stopping", ComponentResult.success(
            {"patience": cfg.train.early_stopping_patience, "stopped_at": state.stopped_at,
             "best_step": state.best_step, "best_val": state.best_val}))

    d = cfg.diagnostics

    def conditioning():
        if ff:
            return ComponentResult.disabled(ff_reason, enable=ff_enable)
        if not d.conditioning.enabled:
            return ComponentResult.disabled("diagnostics.conditioning.enabled is false",
                                            enable="--set diagnostics.conditioning.enabled=true")
        sub = _sub(diag_batch, d.conditioning.samples)
        data_, metrics, fig = dg.conditioning(model, sub, schedule, cfg.mining, cfg.mining.strategy,
                                              cfg.data.n)
        return ComponentResult.success(data_, metrics=metrics,
                                       figures=[run.log_figure(fig, "conditioning_hist.png")])

    def history_component(enabled: bool, key: str, names: list[str], title: str, extra: dict):
        if ff:
            return ComponentResult.disabled(ff_reason, enable=ff_enable)
        if not enabled:
            return ComponentResult.disabled(f"diagnostics.{key}.enabled is false",
                                            enable=f"--set diagnostics.{key}.enabled=true")
        h = state.history
        if not h["step"]:
            return ComponentResult.failed("no evaluation ran, so nothing was probed "
                                          "(train.eval_every > train.steps?)")
        data_ = {**extra, "evaluations": len(h["step"])}
        for name in names:
            if name in h:
                data_[f"{name}.final"] = h[name][-1]
                data_[f"{name}.first"] = h[name][0]
        fig = dg.series_figure(h["step"], {n: h[n] for n in names if n in h}, title)
        return ComponentResult.success(data_, figures=[run.log_figure(fig, f"{key}.png")])

    run.component("diagnostics.conditioning", conditioning)
    run.component("diagnostics.energy_gap", lambda: history_component(
        d.energy_gap.enabled, "energy_gap",
        ["diag.energy_gap", "diag.mining.grad_norm", "diag.mining.diversity"],
        "energy gap E(neg) - E(pos), mining gradient norm, negatives' diversity (fixed batch)",
        {"samples": d.energy_gap.samples}))
    run.component("diagnostics.false_negatives", lambda: history_component(
        d.false_negatives.enabled, "false_negatives", ["diag.false_negatives.fraction"],
        "fraction of mined negatives within the threshold MSE of the true inverse",
        {"threshold": d.false_negatives.threshold}))


def _sub(batch, k: int):
    from projects.ired.diagnostics import DiagBatch

    return DiagBatch(batch.x[:k], batch.y0[:k], batch.t[:k], batch.noise[:k], batch.seed)
