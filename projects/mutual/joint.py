"""One joint training step of a pair, and evaluation: task-agnostic, loop-agnostic pure functions.

    task = get_task(cfg.problem)(cfg); data = task.load_data(); a, b = task.build_models(data)
    method = build_method(cfg.method); opt_a, opt_b = make_optimizer(a, cfg.train), make_optimizer(b, cfg.train)
    for epoch ...:
        for i, batch in enumerate(iterate_batches(data.train, cfg.train.batch_size, generator)):
            result = joint_step(task, method, a, b, opt_a, opt_b, batch, epoch=epoch + i / n_batches,
                                step=step, update_b=epoch < cfg.model_b_epochs())
            run.log_metrics(result.metrics(), step)
        run.log_metrics(evaluate(task, {"a": a, "b": b}, data.val), step)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import torch
from torch import nn

from projects.mutual.methods.base import MethodLosses, MutualMethod, masked_mean
from projects.mutual.tasks.base import Task


def make_optimizer(model: nn.Module, train: Any) -> torch.optim.Optimizer:
    """``train.optimizer`` (adam | adamw | sgd) with ``lr``, ``weight_decay``, ``momentum``."""
    params = [p for p in model.parameters() if p.requires_grad]
    kind = train.optimizer
    if kind == "adam":
        return torch.optim.Adam(params, lr=train.lr, weight_decay=train.weight_decay)
    if kind == "adamw":
        return torch.optim.AdamW(params, lr=train.lr, weight_decay=train.weight_decay)
    if kind == "sgd":
        return torch.optim.SGD(params, lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay)
    raise ValueError(f"unknown optimizer {kind!r}; valid: adam, adamw, sgd")


def iterate_batches(split: Any, batch_size: int, generator: torch.Generator | None = None, *,
                    shuffle: bool = True, device: Any = None, with_index: bool = False) -> Iterator[tuple]:
    """``(x, y)`` batches of a split (``(x, y, index)`` with ``with_index``); the order comes
    from ``generator`` (checkpoint it to resume the same order). The last batch may be short."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        x, y = split.x[idx], split.y[idx]
        if device is not None:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        yield (x, y, idx) if with_index else (x, y)


@dataclass
class StepResult:
    losses: MethodLosses
    names: tuple[str, str] = ("a", "b")
    grad_norms: dict[str, float] = field(default_factory=dict)
    group_ratios: dict[str, float] = field(default_factory=dict)
    """``diag.<model>.mask_ratio_<group>``: mask ratio within each group of samples given."""

    def metrics(self) -> dict[str, float]:
        """``loss.*`` and ``diag.*`` floats of this step (see :meth:`MethodLosses.metrics`)."""
        out = self.losses.metrics(self.names)
        out.update({f"diag.{name}.grad_norm": v for name, v in self.grad_norms.items()})
        out.update(self.group_ratios)
        return out


def _device_of(model: nn.Module) -> torch.device:
    return next(iter(model.parameters())).device


def joint_step(task: Task, method: MutualMethod, model_a: nn.Module, model_b: nn.Module,
               opt_a: torch.optim.Optimizer, opt_b: torch.optim.Optimizer, batch: tuple, *,
               epoch: float | None = None, step: int | None = None, update_a: bool = True,
               update_b: bool = True, grad_clip: float = 0.0, names: tuple[str, str] = ("a", "b"),
               groups: Mapping[str, torch.Tensor] | None = None) -> StepResult:
    """Forward both models on one batch, the method's losses, backward, step both optimizers.

    ``batch`` is ``(inputs, targets)``, already on the models' device. A model with
    ``update_* = False`` (a weak peer past its epochs) runs in eval mode without a graph: it
    still serves as the peer, but is not trained; updated models are put in train mode.
    ``grad_clip`` > 0 clips each model's gradient norm. ``groups`` (name -> boolean mask
    over the batch, e.g. ``{"noisy": flipped}``) adds the mask ratio within each group.
    """
    inputs, targets = batch[0], batch[1]
    outputs, losses_in = [], []
    for model, update in ((model_a, update_a), (model_b, update_b)):
        model.train(update)
        with torch.set_grad_enabled(update):
            out = task.forward(model, inputs)
            outputs.append(out)
            losses_in.append(task.per_sample_loss(out, targets))
    losses = method(losses_in[0], losses_in[1], outputs[0], outputs[1], task.divergence,
                    epoch=epoch, step=step, valid=task.valid_mask(targets))
    pairs = ((names[0], model_a, opt_a, losses.a, update_a), (names[1], model_b, opt_b, losses.b, update_b))
    for _, _, opt, _, update in pairs:
        if update:
            opt.zero_grad(set_to_none=True)
    total = sum(peer.total for _, _, _, peer, update in pairs if update)
    if isinstance(total, torch.Tensor) and total.requires_grad:
        total.backward()
    grad_norms: dict[str, float] = {}
    for name, model, opt, _, update in pairs:
        if not update:
            continue
        params = [p for p in model.parameters() if p.grad is not None]
        if params:
            norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
            grad_norms[name] = float(norm)
        opt.step()
    ratios: dict[str, float] = {}
    for group, mask in (groups or {}).items():
        mask = mask.to(losses.a.weight.device).bool()
        for name, peer in ((names[0], losses.a), (names[1], losses.b)):
            w = peer.weight if peer.lam > 0 else torch.zeros_like(peer.weight)
            sel = mask.view(mask.shape + (1,) * (w.dim() - mask.dim())).expand_as(w)
            ratios[f"diag.{name}.mask_ratio_{group}"] = (float(masked_mean(w.float(), sel.float()))
                                                         if sel.any() else float("nan"))
    return StepResult(losses, tuple(names), grad_norms, ratios)


@torch.no_grad()
def evaluate(task: Task, models: Mapping[str, nn.Module], split: Any, *, batch_size: int = 1024,
             device: Any = None) -> dict[str, float]:
    """``metric.<model>.<metric>.<split>`` for each model: the task's metrics and ``loss`` (the
    mean per-element task loss), over the whole split, in eval mode (modes restored after)."""
    out: dict[str, float] = {}
    for name, model in models.items():
        dev = device if device is not None else _device_of(model)
        was_training = model.training
        model.eval()
        try:
            values: dict[str, list[torch.Tensor]] = {}
            for x, y in iterate_batches(split, batch_size, shuffle=False, device=dev):
                outputs = task.forward(model, x)
                loss = task.per_sample_loss(outputs, y)
                valid = task.valid_mask(y)
                if valid is not None:
                    loss = (loss * valid).flatten(1).sum(1) / valid.flatten(1).sum(1).clamp_min(1)
                per_sample = {"loss": loss.flatten(1).mean(1) if loss.dim() > 1 else loss}
                per_sample.update(task.metrics(outputs, y))
                for key, v in per_sample.items():
                    values.setdefault(key, []).append(v.detach().cpu())
            reduced = task.reduce_metrics({k: torch.cat(v) for k, v in values.items()})
        finally:
            model.train(was_training)
        for key, value in reduced.items():
            out[f"metric.{name}.{key}.{split.name}"] = value
    return out
