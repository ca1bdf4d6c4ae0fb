"""Entry point of the ``mutual`` task: two models trained side by side under one method.

    labrun run mutual --config quick --set method.name=ssmo-soft
    mlflow run . -e mutual --env-manager local -P problem=classification -P method.name=naive
    python -m projects.mutual.train --config quick --set condition=noise40

Every epoch logs, for each model ``a`` and ``b`` (their architectures are the tags
``mutual.model_a`` / ``mutual.model_b``): ``loss.<m>.{task,imitation,total}`` (epoch means),
``metric.<m>.<metric>.{train,val,test}`` and, on a fixed probe batch, the gradient dynamics
``dynamics.<m>.{conflict_rate,grad_cosine,mask_ratio,grad_norm_ratio}``. The problem
(``classification``, later operator learning, time series, segmentation) plugs in through
:class:`projects.mutual.tasks.base.Task`; nothing here knows which one runs.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from tracking import TrainerState, load_config, start_run
from tracking.config import exit_with_config_error

from projects.mutual.config import Config  # noqa: F401  (the schema the run contract looks for)

NAMES = ("a", "b")
TRAIN_EVAL_SIZE = 1024
"""Training samples scored for ``metric.<m>.<metric>.train`` (a fixed subset: the full set
of CIFAR would cost more than the epoch)."""


class Best(TrainerState):
    """Per model: the best validation value of the task's headline metric, its epoch, and the
    test values at that epoch (early-stopping-style reporting, no stopping)."""

    def __init__(self) -> None:
        self.best: dict[str, dict[str, Any]] = {m: {"val": None, "epoch": None, "test": {}} for m in NAMES}

    def update(self, metrics: dict[str, float], key: str, direction: str, epoch: int) -> None:
        for m in NAMES:
            val = metrics.get(f"metric.{m}.{key}.val")
            if val is None or math.isnan(val):
                continue
            cur = self.best[m]["val"]
            if cur is None or (val > cur if direction == "max" else val < cur):
                self.best[m] = {"val": val, "epoch": epoch,
                                "test": {k: v for k, v in metrics.items()
                                         if k.startswith(f"metric.{m}.") and k.endswith((".test", ".test_clean"))}}


@dataclass
class Pair:
    """What one run trains: the task, its data, both models and optimizers, the method."""

    cfg: Config
    task: Any
    data: Any
    models: dict[str, Any]
    opts: dict[str, Any]
    method: Any
    sampler: Any
    probe: Any
    train_eval: Any
    run: Any = None
    """Under ``--nproc``: DDP wrappers (``nets``), each rank's share of the batches, epoch means
    averaged over ranks. ``models`` stay the modules themselves (checkpoints, probes, evaluation)."""
    nets: dict[str, Any] | None = None


def main(argv: list[str] | None = None) -> None:
    cfg = load_config(Config, argv)
    from projects.mutual.data import DataError
    from projects.mutual.tasks import get_task

    task = get_task(cfg.problem)(cfg)
    try:  # before the run exists: a missing dataset path leaves nothing in the store
        data = task.load_data()
    except DataError as exc:
        exit_with_config_error(str(exc), cfg)
    with start_run(cfg) as run:
        _train(run, _build(cfg, run, task, data))


def _build(cfg: Config, run, task, data) -> Pair:
    import torch

    from projects.mutual.data.base import derived_generator
    from projects.mutual.joint import make_optimizer
    from projects.mutual.methods import build_method

    torch.manual_seed(derived_generator(cfg.seed, "init").initial_seed())
    a, b = (m.to(run.device) for m in task.build_models(data))
    data = _to(data, run.device)
    sub = torch.arange(min(TRAIN_EVAL_SIZE, len(data.train)))
    return Pair(cfg, task, data, {"a": a, "b": b},
                {"a": make_optimizer(a, cfg.train), "b": make_optimizer(b, cfg.train)},
                build_method(cfg.method), derived_generator(cfg.seed, "batches"),
                data.probe(cfg.train.probe_size, cfg.seed), data.train.subset(sub, "train"),
                run, {"a": run.distribute(a), "b": run.distribute(b)})


def _to(data, device):
    from dataclasses import replace

    return replace(data, train=data.train.to(device), val=data.val.to(device), test=data.test.to(device),
                   extra={k: v.to(device) for k, v in data.extra.items()})


def _train(run, p: Pair) -> None:
    cfg = p.cfg
    best = Best()
    run.track_state(model_a=p.models["a"], model_b=p.models["b"], optimizer_a=p.opts["a"],
                    optimizer_b=p.opts["b"], batches=p.sampler, trainer=best)
    _tag(run, p)
    for part in (p.data.train, p.data.val, p.data.test):
        run.log_dataset(part.x, targets=part.y, name=cfg.problem, split=part.name)
    key, direction = _headline(p.task)
    for m in NAMES:  # before anything is logged: "best" in the summary follows the task's metric
        for split in ("train", *p.data.eval_splits()):
            run.set_direction(f"metric.{m}.{key}.{split}", direction)
    epochs = cfg.train.epochs
    loop = run.steps(epochs, desc=f"mutual/{cfg.problem}/{cfg.method.name}", unit="epoch")
    for epoch in loop:
        metrics = _train_epoch(p, epoch)
        if cfg.train.probe_every and (epoch % cfg.train.probe_every == 0 or epoch == epochs):
            metrics.update(_dynamics(p, epoch))
        if epoch % cfg.train.eval_every == 0 or epoch == epochs:
            metrics.update(_evaluate(p))
            best.update(metrics, key, direction, epoch)
        run.log_metrics(metrics, step=epoch)
        run.epoch_line(epoch, epochs, metrics, loop.elapsed_s,
                       keys=[f"loss.{m}.total" for m in NAMES] + [f"metric.{m}.{key}.val" for m in NAMES])
        if cfg.train.sleep_s:
            time.sleep(cfg.train.sleep_s)
    from projects.mutual.components import record

    record(run, p, best, key, direction)
    for m in NAMES:
        run.log_model(p.models[m], p.data.test.x[:4], name=f"model_{m}")


def _tag(run, p: Pair) -> None:
    cfg = p.cfg
    run.set_tag("mutual.model_a", cfg.model_a.name)
    run.set_tag("mutual.model_b", cfg.model_b.name)
    run.set_tag("mutual.problem", cfg.problem)
    run.set_tag("mutual.dataset", p.data.name)
    run.results["data"] = p.data.describe()
    for m in NAMES:
        n = sum(q.numel() for q in p.models[m].parameters())
        run.results.setdefault("models", {})[m] = {"name": getattr(cfg, f"model_{m}").name, "parameters": n}
    run.log.info("mutual: %s on %s, A=%s B=%s method=%s condition=%s", cfg.problem, p.data.name,
                 cfg.model_a.name, cfg.model_b.name, cfg.method.name, cfg.condition)


def _headline(task) -> tuple[str, str]:
    """The metric ``best`` is chosen by: the task's first metric (accuracy: max)."""
    key = getattr(task, "headline", "accuracy")
    direction = getattr(task, "headline_direction", "max")
    return key, direction


def _train_epoch(p: Pair, epoch: int) -> dict[str, float]:
    """One pass over the training set; epoch means of every per-step loss and diagnostic."""
    from projects.mutual.joint import iterate_batches, joint_step

    cfg = p.cfg
    n_batches = math.ceil(len(p.data.train) / cfg.train.batch_size)
    update_b = epoch <= cfg.model_b_epochs()
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    noisy = p.data.train.noisy
    rank, world = (p.run.rank, p.run.world_size) if p.run is not None else (0, 1)
    mine = range(rank, n_batches - n_batches % world, world)  # equal shares: DDP steps in lockstep
    nets = p.nets or p.models
    for i, (x, y, idx) in enumerate(iterate_batches(p.data.train, cfg.train.batch_size, p.sampler,
                                                      with_index=True)):
        if i not in mine:
            continue
        groups = {"noisy": noisy[idx]} if noisy is not None else None
        result = joint_step(p.task, p.method, nets["a"], nets["b"], p.opts["a"], p.opts["b"],
                            (x, y), epoch=(epoch - 1) + i / n_batches, step=None, update_b=update_b,
                            grad_clip=cfg.train.grad_clip, groups=groups)
        for k, v in result.metrics().items():
            sums.setdefault(k, 0.0)
            counts.setdefault(k, 0)
            if not math.isnan(v):
                sums[k] += v
                counts[k] += 1
    out = {k: sums[k] / counts[k] if counts[k] else math.nan for k in sums if counts[k] or world > 1}
    if world > 1:  # every rank has every name (NaN where it saw none); NaN stays out
        out = {k: v for k, v in p.run.all_ranks(out).items() if not math.isnan(v)}
    out["diag.b.updated"] = float(update_b)
    return out


def _dynamics(p: Pair, epoch: int) -> dict[str, float]:
    from projects.mutual.dynamics import gradient_dynamics

    batch = (p.probe.x, p.probe.y)
    return gradient_dynamics(p.task, p.method, p.models["a"], p.models["b"], batch, names=NAMES,
                             epoch=float(epoch), mode=p.cfg.train.probe_mode)


def _evaluate(p: Pair) -> dict[str, float]:
    from projects.mutual.joint import evaluate

    out = evaluate(p.task, p.models, p.train_eval)
    for split in p.data.eval_splits().values():
        out.update(evaluate(p.task, p.models, split))
    return out


if __name__ == "__main__":
    main()
