"""Toy regression: the smallest task that uses the whole run contract.

A two-layer MLP fits a noisy random linear map. It exists so the platform (and its tests,
and ``make demo``'s first minute) can exercise configs, metrics, components, checkpoints,
resume, failures and kills on something that trains in seconds.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

from tracking import load_config, start_run

from projects.toy.components import COMPONENTS
# The schema lives in config.py (torch-free); re-exported because `Config` here is the contract.
from projects.toy.config import (Config, DataConfig, DiagnosticsConfig, ModelConfig,  # noqa: F401
                                 TrainConfig)


def _data(cfg: Config, device):
    import torch

    g = torch.Generator().manual_seed(10_000 + cfg.seed)
    w = torch.randn(cfg.data.n_features, 1, generator=g)
    x = torch.randn(cfg.data.n_train + cfg.data.n_val, cfg.data.n_features, generator=g)
    y = x @ w + cfg.data.noise * torch.randn(x.shape[0], 1, generator=g)
    n = cfg.data.n_train
    return x[:n].to(device), y[:n].to(device), x[n:].to(device), y[n:].to(device)


def _fail(cfg: Config, step: int) -> None:
    if cfg.train.fail_kind == "hang":
        time.sleep(10**6)
    raise RuntimeError(f"injected failure at step {step} (train.fail_at_step)")


def main(argv: list[str] | None = None) -> None:
    cfg = load_config(Config, argv)
    import torch

    with start_run(cfg) as run:
        xtr, ytr, xva, yva = _data(cfg, run.device)
        run.log_dataset(xtr, targets=ytr, name="toy-linear", split="train")
        run.log_dataset(xva, targets=yva, name="toy-linear", split="validation")
        act = torch.nn.ReLU() if cfg.model.activation == "relu" else torch.nn.Tanh()
        model = torch.nn.Sequential(torch.nn.Linear(cfg.data.n_features, cfg.model.hidden), act,
                                    torch.nn.Linear(cfg.model.hidden, 1)).to(run.device)
        trained = run.distribute(model)  # DDP under --nproc N: each rank draws its own batch
        opt_cls = torch.optim.Adam if cfg.train.optimizer == "adam" else torch.optim.SGD
        opt = opt_cls(model.parameters(), lr=cfg.train.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.train.steps))
        sampler = torch.Generator().manual_seed(cfg.seed + 1_000_003 * run.rank)
        run.track_state(model=model, optimizer=opt, scheduler=sched, sampler=sampler)
        loop = run.steps(cfg.train.steps, desc="toy")
        for step in loop:
            if cfg.train.fail_at_step == step and cfg.train.fail_rank in (None, run.rank):
                _fail(cfg, step)
            idx = torch.randint(0, xtr.shape[0], (cfg.train.batch_size,), generator=sampler)
            loss = torch.nn.functional.mse_loss(trained(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            metrics = {**run.all_ranks({"loss.total": loss.item()}), "diag.lr": sched.get_last_lr()[0]}
            if step % cfg.train.eval_every == 0 or step == cfg.train.steps:
                with torch.no_grad():
                    metrics["metric.mse.val"] = torch.nn.functional.mse_loss(model(xva), yva).item()
                run.epoch_line(step, cfg.train.steps, metrics, loop.elapsed_s)
            run.log_metrics(metrics, step=step)
            if cfg.train.sleep_s:
                time.sleep(cfg.train.sleep_s)
        run.report_components(COMPONENTS, SimpleNamespace(run=run, model=model, xva=xva, yva=yva))
        run.log_model(model, xva[:4])


if __name__ == "__main__":
    main()
