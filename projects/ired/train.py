"""Entry point of the ``ired`` task: train one model under the run contract.

``python -m projects.ired.train --config quick --set mining.strategy=adversarial`` (or
``labrun run ired ...``, or ``mlflow run . -e ired -P mining.strategy=random``).

``model.kind=energy`` trains IRED with the chosen ``mining.strategy``; the run's
``labrun.method`` tag is that strategy. ``model.kind=feedforward`` trains the supervised
baseline; mining does not apply to it, so its ``labrun.method`` tag is ``feedforward``
whatever ``mining.*`` says, and the mining-related diagnostics report ``disabled``.
(Sweeps should therefore list the feedforward baseline once, not once per strategy.)
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tracking import TrainerState, load_config, start_run

# The schema lives in config.py (torch-free); re-exported because `Config` here is the contract.
from projects.ired.config import (Config, DataConfig, DiagnosticsConfig, DiffusionConfig,  # noqa: F401
                                  MiningConfig, ModelConfig, TrainConfig)


class IredState(TrainerState):
    """Early stopping, best weights and diagnostic history: checkpointed with the run."""

    def __init__(self) -> None:
        self.best_val = float("inf")
        self.best_step = -1
        self.bad_evals = 0
        self.best_weights: dict | None = None
        self.history: dict[str, list] = {"step": []}

    def record(self, step: int, values: dict[str, float]) -> None:
        self.history["step"].append(step)
        for k, v in values.items():
            self.history.setdefault(k, []).append(v)

    def update(self, step: int, val: float, weights: dict, min_delta: float) -> bool:
        if val < self.best_val - min_delta:
            self.best_val, self.best_step, self.bad_evals = val, step, 0
            self.best_weights = {k: v.detach().clone() for k, v in weights.items()}
            return True
        self.bad_evals += 1
        return False


def _lr_lambda(cfg: TrainConfig):
    import math

    def factor(step: int) -> float:
        if cfg.lr_schedule == "constant" or step < cfg.lr_cosine_start:
            return 1.0
        span = max(1, cfg.steps - cfg.lr_cosine_start)
        frac = min(1.0, (step - cfg.lr_cosine_start) / span)
        return cfg.lr_min_ratio + (1 - cfg.lr_min_ratio) * 0.5 * (1 + math.cos(math.pi * frac))
    return factor


def main(argv: list[str] | None = None) -> None:
    cfg = load_config(Config, argv)
    with start_run(cfg) as run:
        _train(cfg, run)


@dataclass
class Trainer:
    """Everything one IRED run trains and evaluates with, built once by :func:`_build`."""

    cfg: Config
    run: Any
    data: Any
    model: Any
    schedule: Any
    opt: Any
    sched: Any
    ema: Any
    stream: Any
    state: IredState
    diag_batch: Any
    train_time: float = 0.0
    samples: int = 0
    last_batch: Any = None

    @property
    def energy(self) -> bool:
        return self.cfg.model.kind == "energy"

    def eval_model(self):
        return self.ema.model if self.cfg.train.ema_decay > 0 else self.model

    def mse(self, model, x, y) -> float:
        from projects.ired.evaluate import mse

        d = self.cfg.diffusion
        return mse(model, self.cfg.model.kind, x, y, self.schedule, inference_steps=d.inference_opt_steps,
                   seed=self.cfg.seed, reject_uphill=d.reject_uphill)


def _build(cfg: Config, run) -> Trainer:
    import torch

    from projects.ired import diagnostics as dg
    from projects.ired.data import MatrixInverseData, derived_generator
    from projects.ired.diffusion import Schedule
    from projects.ired.model import EMA, build_model

    dev = run.device
    torch.set_flush_denormal(cfg.train.flush_denormal)
    data = MatrixInverseData(cfg.data.n, cfg.seed, n_val=cfg.data.n_val, n_test=cfg.data.n_test,
                             ood_shift=cfg.data.ood_shift, device=dev)
    torch.manual_seed(derived_generator(cfg.seed, "init").initial_seed())
    model = build_model(cfg.model.kind, data.dim, cfg.model.hidden, cfg.model.layers,
                        cfg.model.time_dim).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    diag = cfg.diagnostics
    diag_batch = dg.DiagBatch.make(cfg.data.n, max(diag.energy_gap.samples, diag.conditioning.samples),
                                   cfg.diffusion.timesteps, cfg.seed, dev) \
        if cfg.model.kind == "energy" else None
    return Trainer(cfg, run, data, model, Schedule.cosine(cfg.diffusion.timesteps, cfg.diffusion.clamp, device=dev),
                   opt, torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.train)),
                   EMA(model, cfg.train.ema_decay), torch.Generator().manual_seed(cfg.seed), IredState(),
                   diag_batch)


def _train(cfg: Config, run) -> None:
    t = _build(cfg, run)
    for split, data in (("validation", t.data.val), ("test", t.data.test), ("test_ood", t.data.test_ood)):
        run.log_dataset(data.x, targets=data.y, name=f"matrix-inverse-n{cfg.data.n}", split=split)
    run.track_state(model=t.model, optimizer=t.opt, scheduler=t.sched, ema=t.ema, data=t.stream,
                    trainer=t.state)
    for name in ("perf.samples_per_s", "diag.energy_gap", "diag.energy_gap.frac_positive",
                 "diag.mining.diversity"):
        run.set_direction(name, "max")
    run.log.info("ired: model=%s method=%s n=%d params=%d", cfg.model.kind, cfg.method_tag, cfg.data.n,
                 sum(p.numel() for p in t.model.parameters()))
    loop = run.steps(cfg.train.steps, desc=f"ired/{cfg.method_tag}")
    for step in loop:
        metrics = _train_step(t)
        improved = False
        if step % cfg.train.eval_every == 0 or step == cfg.train.steps:
            improved = _evaluate(t, step, metrics, loop.elapsed_s)
        run.log_metrics(metrics, step=step)
        if improved:
            run.save_checkpoint(step, best=True)
        patience = cfg.train.early_stopping_patience
        if patience and t.state.bad_evals >= patience:
            loop.stop(f"early stopping: no val improvement for {patience} evaluations "
                      f"(best {t.state.best_val:.6g} at step {t.state.best_step})")
        if cfg.train.sleep_s:
            time.sleep(cfg.train.sleep_s)
    _test(t, last=max(loop.last, loop.start - 1), stopped_at=loop.stopped_at)


def _train_step(t: Trainer) -> dict[str, float]:
    import torch

    from projects.ired.objective import energy_losses, feedforward_losses

    cfg = t.cfg
    t0 = time.perf_counter()
    x, y = t.data.batch(cfg.train.batch_size, t.stream)
    losses = (energy_losses(t.model, x, y, t.schedule, cfg.mining, t.stream) if t.energy
              else feedforward_losses(t.model, x, y))
    t.opt.zero_grad(set_to_none=True)
    losses.total.backward()
    max_norm = cfg.train.grad_clip if cfg.train.grad_clip > 0 else float("inf")
    norm = float(torch.nn.utils.clip_grad_norm_(t.model.parameters(), max_norm))
    t.opt.step()
    t.sched.step()
    t.ema.update(t.model)
    t.train_time += time.perf_counter() - t0
    t.samples += x.shape[0]
    t.last_batch = (x, y)
    metrics = {"loss.total": losses.total.item(), "diag.grad_norm": norm,
               "diag.grad_norm_clipped": min(norm, max_norm), "diag.lr": t.sched.get_last_lr()[0]}
    if t.energy:
        metrics["loss.denoise"] = losses.denoise.item()
        metrics["loss.energy"] = losses.energy.item()
    return metrics


def _evaluate(t: Trainer, step: int, metrics: dict[str, float], elapsed_s: float) -> bool:
    """Train/val MSE and the diagnostic probe into ``metrics``; True when val improved."""
    from projects.ired import diagnostics as dg

    cfg = t.cfg
    em = t.eval_model()
    x, y = t.last_batch
    k = min(cfg.train.train_eval_size, x.shape[0])
    metrics["metric.mse.train"] = t.mse(em, x[:k], y[:k])
    metrics["metric.mse.val"] = t.mse(em, t.data.val.x, t.data.val.y)
    d = cfg.diagnostics
    if t.energy and (d.energy_gap.enabled or d.false_negatives.enabled):
        p = dg.probe(t.model, t.diag_batch, t.schedule, cfg.mining, cfg.mining.strategy,
                     d.false_negatives.threshold)
        metrics.update(p)
        t.state.record(step, p)
    improved = t.state.update(step, metrics["metric.mse.val"], em.state_dict(),
                              cfg.train.early_stopping_min_delta)
    t.run.log_metrics({"perf.samples_per_s": t.samples / max(t.train_time, 1e-9)}, step=step)
    t.run.epoch_line(step, cfg.train.steps, metrics, elapsed_s,
                     keys=["loss.total", "metric.mse.train", "metric.mse.val", "diag.energy_gap"])
    return improved


def _test(t: Trainer, last: int, stopped_at: int | None) -> None:
    """Test on the best-validation EMA weights (the final ones if validation never ran)."""
    import copy

    from projects.ired.components import record_components

    best = copy.deepcopy(t.eval_model())
    if t.state.best_weights is not None:
        best.load_state_dict(t.state.best_weights)
    t.run.log_model(best, t.data.val.x[:4])
    test = {"metric.mse.test": t.mse(best, t.data.test.x, t.data.test.y),
            "metric.mse.test_ood": t.mse(best, t.data.test_ood.x, t.data.test_ood.y)}
    t.run.log_metrics(test, step=last)
    t.run.results.update({**test, "best_val": t.state.best_val, "best_step": t.state.best_step,
                          "stopped_at": stopped_at,
                          "samples_per_s_this_process": t.samples / t.train_time if t.train_time else None})
    record_components(t, test, stopped_at)


if __name__ == "__main__":
    main()
