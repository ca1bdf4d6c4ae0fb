"""Toy regression: the smallest task that uses the whole run contract.

A two-layer MLP fits a noisy random linear map. It exists so the platform (and its tests,
and ``make demo``'s first minute) can exercise configs, metrics, components, checkpoints,
resume, failures and kills on something that trains in seconds.
"""
from __future__ import annotations

import time
from types import SimpleNamespace
from typing import ClassVar, Literal

from tracking import ComponentResult, Components, Section, TaskConfig, execution, load_config, start_run


class DataConfig(Section):
    n_train: int = 512
    n_val: int = 256
    n_features: int = 8
    noise: float = 0.1


class ModelConfig(Section):
    hidden: int = 32
    activation: Literal["relu", "tanh"] = "relu"


class TrainConfig(Section):
    steps: int = 200
    batch_size: int = 32
    lr: float = 1e-2
    optimizer: Literal["adam", "sgd"] = "adam"
    eval_every: int = 20
    sleep_s: float = execution(0.0)
    """Pause per step: lets a person (or a test) interrupt a run mid-way."""
    fail_at_step: int | None = None
    """Raise at this step: shows what a crashing run leaves in the store."""


class DiagnosticsConfig(Section):
    weight_norms: bool = True
    residuals: bool = False
    broken_probe: bool = False
    """A diagnostic whose code raises: the run must still finish, reporting it failed."""


class Config(TaskConfig):
    task: ClassVar[str] = "toy"
    method_key: ClassVar[str] = "train.optimizer"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    diagnostics: DiagnosticsConfig = DiagnosticsConfig()


def _data(cfg: Config, device):
    import torch

    g = torch.Generator().manual_seed(10_000 + cfg.seed)
    w = torch.randn(cfg.data.n_features, 1, generator=g)
    x = torch.randn(cfg.data.n_train + cfg.data.n_val, cfg.data.n_features, generator=g)
    y = x @ w + cfg.data.noise * torch.randn(x.shape[0], 1, generator=g)
    n = cfg.data.n_train
    return x[:n].to(device), y[:n].to(device), x[n:].to(device), y[n:].to(device)


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
        opt_cls = torch.optim.Adam if cfg.train.optimizer == "adam" else torch.optim.SGD
        opt = opt_cls(model.parameters(), lr=cfg.train.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.train.steps))
        sampler = torch.Generator().manual_seed(cfg.seed)
        run.track_state(model=model, optimizer=opt, scheduler=sched, sampler=sampler)
        loop = run.steps(cfg.train.steps, desc="toy")
        for step in loop:
            if cfg.train.fail_at_step == step:
                raise RuntimeError(f"injected failure at step {step} (train.fail_at_step)")
            idx = torch.randint(0, xtr.shape[0], (cfg.train.batch_size,), generator=sampler)
            loss = torch.nn.functional.mse_loss(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            metrics = {"loss.total": loss.item(), "diag.lr": sched.get_last_lr()[0]}
            if step % cfg.train.eval_every == 0 or step == cfg.train.steps:
                with torch.no_grad():
                    metrics["metric.mse.val"] = torch.nn.functional.mse_loss(model(xva), yva).item()
                run.epoch_line(step, cfg.train.steps, metrics, loop.elapsed_s)
            run.log_metrics(metrics, step=step)
            if cfg.train.sleep_s:
                time.sleep(cfg.train.sleep_s)
        run.report_components(COMPONENTS, SimpleNamespace(run=run, model=model, xva=xva, yva=yva))
        run.log_model(model, xva[:4])


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


if __name__ == "__main__":
    main()
