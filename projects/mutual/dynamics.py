"""Gradient dynamics of mutual learning on a fixed probe batch, per model.

For each model, on the probe batch, with ``g_task`` the gradient of its mean task loss and
``g_imit`` the gradient of its imitation contribution ``lam_eff * imitation`` (what its
optimizer actually receives beyond the task loss; 0 during warm-up and for independent),
both flattened over the model's trainable parameters:

``dynamics.<m>.conflict_rate``
    Among parameter entries where *both* gradients are nonzero, the fraction whose signs
    are opposite. An exact zero has no direction: it neither conflicts nor agrees and is
    left out of the denominator (unused parameters, dead units, masked-off imitation). If
    no entry has both nonzero (imitation off, or a vanishing task gradient), the rate is 0.
``dynamics.<m>.grad_cosine``
    ``<g_task, g_imit> / (||g_task|| ||g_imit||)``; 0 when either gradient is exactly 0
    (imitation off): no alignment to report, and curves and means stay defined.
``dynamics.<m>.mask_ratio``
    Share of probe elements where imitation is on (the mean weight for ssmo-soft; 1 for
    naive, 0 for independent; 0 during warm-up).
``dynamics.<m>.grad_norm_ratio``
    ``||g_imit|| / ||g_task||``; 0 when ``g_imit`` is 0 (imitation off); NaN (undefined)
    when ``g_task`` is exactly 0 while ``g_imit`` is not.

Gradients come from :func:`torch.autograd.grad`, so parameters' ``.grad`` are untouched.
``mode="eval"`` (default) probes in eval mode (no dropout, BatchNorm running statistics:
deterministic and side-effect free); ``mode="train"`` probes in train mode, then restores
every buffer (BatchNorm statistics) and the RNG state. Each model's train/eval mode is
restored either way. All arithmetic is in float64.
"""
from __future__ import annotations

import contextlib
import math
import re
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from projects.mutual.methods.base import MutualMethod
from projects.mutual.tasks.base import Task

_SEGMENT = re.compile(r"^[a-z0-9_][a-z0-9_\-]*$")
STATS = ("conflict_rate", "grad_cosine", "mask_ratio", "grad_norm_ratio")


def _flat(grads: Sequence[torch.Tensor | None], params: Sequence[torch.Tensor]) -> torch.Tensor:
    """One float64 vector; a complex entry (FNO's spectral weights) counts as its real and
    imaginary parts, so no part of the gradient is dropped."""
    parts = []
    for g, p in zip(grads, params):
        t = g if g is not None else torch.zeros_like(p)
        t = torch.view_as_real(t) if t.is_complex() else t
        parts.append(t.detach().reshape(-1).to(torch.float64).cpu())
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def gradient_stats(g_task: Sequence[torch.Tensor | None], g_imit: Sequence[torch.Tensor | None] | None,
                   params: Sequence[torch.Tensor]) -> dict[str, float]:
    """``conflict_rate``, ``grad_cosine``, ``grad_norm_ratio`` of two per-parameter gradient
    lists (``None`` entries, or ``g_imit=None``, are zero gradients); see the module doc."""
    t = _flat(g_task, params)
    m = _flat(g_imit if g_imit is not None else [None] * len(params), params)
    both = (t != 0) & (m != 0)
    n_both = int(both.sum())
    conflict = float(((t * m) < 0).sum()) / n_both if n_both else 0.0
    nt, nm = float(t.norm()), float(m.norm())
    cosine = float(t @ m) / (nt * nm) if nt > 0 and nm > 0 else 0.0
    if nm == 0:
        ratio = 0.0
    elif nt == 0:
        ratio = math.nan
    else:
        ratio = nm / nt
    return {"conflict_rate": conflict, "grad_cosine": cosine, "grad_norm_ratio": ratio}


@contextlib.contextmanager
def _probe_state(models: Sequence[nn.Module], mode: str) -> Iterator[None]:
    if mode not in ("eval", "train"):
        raise ValueError(f"unknown probe mode {mode!r}; valid: eval, train")
    modes = [m.training for m in models]
    buffers = [[b.detach().clone() for b in m.buffers()] for m in models] if mode == "train" else None
    devices = sorted({p.device.index or 0 for m in models for p in m.parameters() if p.is_cuda})
    try:
        with torch.random.fork_rng(devices=devices):
            for m in models:
                m.train(mode == "train")
            yield
    finally:
        for m, was in zip(models, modes):
            m.train(was)
        if buffers is not None:
            with torch.no_grad():
                for m, saved in zip(models, buffers):
                    for b, s in zip(m.buffers(), saved):
                        b.copy_(s)


def gradient_dynamics(task: Task, method: MutualMethod, model_a: nn.Module, model_b: nn.Module,
                      batch: Any, *, names: tuple[str, str] = ("a", "b"), epoch: float | None = None,
                      step: int | None = None, mode: str = "eval") -> dict[str, float]:
    """``dynamics.<name>.{conflict_rate, grad_cosine, mask_ratio, grad_norm_ratio}`` for both
    models on ``batch`` (``(inputs, targets)`` or a split with ``.x``/``.y``), at this point
    of the method's warm-up (``epoch``/``step`` as for the method itself)."""
    for name in names:
        if not _SEGMENT.match(name):
            raise ValueError(f"model name {name!r} cannot be a metric segment: use lowercase "
                             f"letters, digits, '_' or '-' (e.g. 'a', 'mlp')")
    if len(set(names)) != 2:
        raise ValueError(f"the two models need different names, got {names!r}")
    inputs, targets = (batch.x, batch.y) if hasattr(batch, "x") else (batch[0], batch[1])
    out: dict[str, float] = {}
    with _probe_state((model_a, model_b), mode), torch.enable_grad():
        outs = [task.forward(model_a, inputs), task.forward(model_b, inputs)]
        la, lb = (task.per_sample_loss(o, targets) for o in outs)
        losses = method(la, lb, outs[0], outs[1], task.divergence, epoch=epoch, step=step,
                        valid=task.valid_mask(targets))
        for name, model, peer in ((names[0], model_a, losses.a), (names[1], model_b, losses.b)):
            params = [p for p in model.parameters() if p.requires_grad]
            g_task = torch.autograd.grad(peer.task, params, retain_graph=True, allow_unused=True) \
                if peer.task.requires_grad else None
            g_imit = None
            if peer.lam > 0 and peer.imitation.requires_grad:
                g_imit = torch.autograd.grad(peer.lam * peer.imitation, params, retain_graph=True,
                                             allow_unused=True)
            stats = gradient_stats(g_task if g_task is not None else [None] * len(params), g_imit, params)
            stats["mask_ratio"] = peer.mask_ratio
            out.update({f"dynamics.{name}.{key}": stats[key] for key in STATS})
    return out
