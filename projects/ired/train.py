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

from tracking import load_config, start_run

# The schema lives in config.py (torch-free); re-exported because `Config` here is the contract.
from projects.ired.config import (Config, DataConfig, DiagnosticsConfig, DiffusionConfig,  # noqa: F401
                                  MiningConfig, ModelConfig, TrainConfig)


class TrainerState:
    """Early stopping, best weights and diagnostic history: checkpointed with the run."""

    def __init__(self) -> None:
        self.best_val = float("inf")
        self.best_step = -1
        self.bad_evals = 0
        self.stopped_at: int | None = None
        self.best_weights: dict | None = None
        self.history: dict[str, list] = {"step": []}

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        self.__dict__.update(state)

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
    import sys
    from pathlib import Path

    # Name the command the user typed in errors and --help: this module, or `labrun run ired`.
    direct = Path(sys.argv[0]).name == "train.py" and Path(sys.argv[0]).parent.name == "ired"
    cfg = load_config(Config, argv, prog="python -m projects.ired.train" if direct else None)
    with start_run(cfg) as run:
        _train(cfg, run)


def _train(cfg: Config, run) -> None:
    import copy

    import torch

    from projects.ired import diagnostics as dg
    from projects.ired.data import MatrixInverseData, derived_generator
    from projects.ired.diffusion import Schedule
    from projects.ired.evaluate import mse
    from projects.ired.model import EMA, build_model
    from projects.ired.objective import energy_losses, feedforward_losses

    dev = run.device
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    torch.set_flush_denormal(cfg.train.flush_denormal)
    energy = cfg.model.kind == "energy"
    data = MatrixInverseData(cfg.data.n, cfg.seed, n_val=cfg.data.n_val, n_test=cfg.data.n_test,
                             ood_shift=cfg.data.ood_shift, device=dev)
    torch.manual_seed(derived_generator(cfg.seed, "init").initial_seed())
    model = build_model(cfg.model.kind, data.dim, cfg.model.hidden, cfg.model.layers,
                        cfg.model.time_dim).to(dev)
    schedule = Schedule.cosine(cfg.diffusion.timesteps, cfg.diffusion.clamp, device=dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.train))
    ema = EMA(model, cfg.train.ema_decay)
    stream = torch.Generator().manual_seed(cfg.seed)
    state = TrainerState()
    resumed = run.track_state(model=model, optimizer=opt, scheduler=sched, ema=ema, data=stream,
                              trainer=state)
    start = resumed.global_step + 1 if resumed else 1
    for name in ("perf.samples_per_s", "diag.energy_gap", "diag.energy_gap.frac_positive",
                 "diag.mining.diversity"):
        run.set_direction(name, "max")
    run.log.info("ired: model=%s method=%s n=%d params=%d", cfg.model.kind, cfg.method_tag, cfg.data.n,
                 sum(p.numel() for p in model.parameters()))

    eval_kw = dict(inference_steps=cfg.diffusion.inference_opt_steps, seed=cfg.seed,
                   reject_uphill=cfg.diffusion.reject_uphill)
    probe_on = energy and (cfg.diagnostics.energy_gap.enabled or cfg.diagnostics.false_negatives.enabled)
    diag_batch = dg.DiagBatch.make(cfg.data.n, max(cfg.diagnostics.energy_gap.samples,
                                                   cfg.diagnostics.conditioning.samples),
                                   cfg.diffusion.timesteps, cfg.seed, dev) if energy else None

    def eval_model():
        return ema.model if cfg.train.ema_decay > 0 else model

    step = start - 1
    train_time, samples = 0.0, 0
    t_run = time.time()
    todo = range(start, cfg.train.steps + 1) if state.stopped_at is None else range(0)  # resumed a stopped run
    for step in run.progress(todo, total=cfg.train.steps, initial=start - 1, desc=f"ired/{cfg.method_tag}"):
        t0 = time.perf_counter()
        x, y = data.batch(cfg.train.batch_size, stream)
        losses = (energy_losses(model, x, y, schedule, cfg.mining, stream) if energy
                  else feedforward_losses(model, x, y))
        opt.zero_grad(set_to_none=True)
        losses.total.backward()
        max_norm = cfg.train.grad_clip if cfg.train.grad_clip > 0 else float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
        opt.step()
        sched.step()
        ema.update(model)
        train_time += time.perf_counter() - t0
        samples += x.shape[0]

        metrics = {"loss.total": losses.total.item(), "diag.grad_norm": norm,
                   "diag.grad_norm_clipped": min(norm, max_norm), "diag.lr": sched.get_last_lr()[0]}
        if energy:
            metrics["loss.denoise"] = losses.denoise.item()
            metrics["loss.energy"] = losses.energy.item()
        improved = False
        if step % cfg.train.eval_every == 0 or step == cfg.train.steps:
            em = eval_model()
            k = min(cfg.train.train_eval_size, x.shape[0])
            metrics["metric.mse.train"] = mse(em, cfg.model.kind, x[:k], y[:k], schedule, **eval_kw)
            metrics["metric.mse.val"] = mse(em, cfg.model.kind, data.val.x, data.val.y, schedule, **eval_kw)
            if probe_on:
                p = dg.probe(model, diag_batch, schedule, cfg.mining, cfg.mining.strategy,
                             cfg.diagnostics.false_negatives.threshold)
                metrics.update(p)
                state.record(step, p)
            improved = state.update(step, metrics["metric.mse.val"], em.state_dict(),
                                    cfg.train.early_stopping_min_delta)
            perf = {"perf.samples_per_s": samples / max(train_time, 1e-9)}
            run.log_metrics(perf, step=step)
            run.epoch_line(step, cfg.train.steps, metrics, time.time() - t_run,
                           keys=["loss.total", "metric.mse.train", "metric.mse.val", "diag.energy_gap"])
        run.log_metrics(metrics, step=step)
        if improved:
            run.save_checkpoint(step, best=True)
        patience = cfg.train.early_stopping_patience
        if patience and state.bad_evals >= patience:
            state.stopped_at = step
        if run.should_checkpoint(step) or step == cfg.train.steps or state.stopped_at == step:
            run.save_checkpoint(step)
        if state.stopped_at is not None:
            run.log.info("early stopping at step %d: no val improvement for %d evaluations "
                         "(best %.6g at step %d)", step, patience, state.best_val, state.best_step)
            break
        if cfg.train.sleep_s:
            time.sleep(cfg.train.sleep_s)
    last = max(step, start - 1)

    # Test on the best-validation EMA weights (the final ones if validation never ran).
    best = copy.deepcopy(eval_model())
    if state.best_weights is not None:
        best.load_state_dict(state.best_weights)
    test = {"metric.mse.test": mse(best, cfg.model.kind, data.test.x, data.test.y, schedule, **eval_kw),
            "metric.mse.test_ood": mse(best, cfg.model.kind, data.test_ood.x, data.test_ood.y,
                                       schedule, **eval_kw)}
    run.log_metrics(test, step=last)
    run.results.update({**test, "best_val": state.best_val, "best_step": state.best_step,
                        "stopped_at": state.stopped_at,
                        "samples_per_s_this_process": samples / train_time if train_time else None})
    from projects.ired.components import record_components

    record_components(cfg, run, data, model, schedule, state, diag_batch, test)


if __name__ == "__main__":
    main()
