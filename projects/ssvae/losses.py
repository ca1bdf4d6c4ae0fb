"""The SSVAE objective as named, weighted terms that add up to ``loss.total``.

Each value returned is that term's *contribution* (weight included), averaged per example
of the batch, so the logged ``loss.*`` series sum exactly to ``loss.total`` and an ablation
that switches a term off simply lacks it (its component says why).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

_LOG_2PI = math.log(2 * math.pi)


@dataclass
class LossWeights:
    kl_weight: float = 1.0
    classifier: float = 0.0
    """0 switches the labelled-data classifier term off."""
    diversity: float = 0.0
    """> 0 rewards spread-out average responsibilities (anti-collapse); < 0 penalises it."""
    dirichlet: float = 0.0
    dirichlet_alpha: float = 1.0
    num_classes: int = 10
    num_train: int = 1


def reconstruction_nll(x: torch.Tensor, out: dict[str, torch.Tensor]) -> torch.Tensor:
    """-log p(x|z_c) for every component branch: [B, K], summed over pixels."""
    target = x[:, None, :].expand_as(out["mean_logits"])
    if "log_sigma" not in out:
        return F.binary_cross_entropy_with_logits(out["mean_logits"], target, reduction="none").sum(-1)
    mean, log_sigma = torch.sigmoid(out["mean_logits"]), out["log_sigma"]
    nll = 0.5 * ((target - mean) * torch.exp(-log_sigma)) ** 2 + log_sigma + 0.5 * _LOG_2PI
    return nll.sum(-1)


def kl_gaussians(mu: torch.Tensor, logvar: torch.Tensor, prior_mu: torch.Tensor,
                 prior_logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, e^logvar) || N(prior_mu, e^prior_logvar)) per component: [B, K]."""
    pm, plv = prior_mu[None], prior_logvar[None]
    return 0.5 * (plv - logvar + (logvar.exp() + (mu - pm) ** 2) / plv.exp() - 1.0).sum(-1)


def class_log_probs(log_q_c: torch.Tensor, num_classes: int) -> torch.Tensor:
    """log p(y|x) when component k stands for class k mod num_classes: [B, num_classes]."""
    k = log_q_c.shape[1]
    groups = torch.arange(k, device=log_q_c.device) % num_classes
    out = torch.full((log_q_c.shape[0], num_classes), -torch.inf, device=log_q_c.device,
                     dtype=log_q_c.dtype)
    for y in range(num_classes):
        mask = groups == y
        if mask.any():
            out[:, y] = torch.logsumexp(log_q_c[:, mask], dim=1)
    return out


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return -(p * torch.log(p.clamp_min(1e-12))).sum(dim)


def loss_terms(model, out: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
               labelled: torch.Tensor, w: LossWeights) -> dict[str, torch.Tensor]:
    """Named contributions for one batch; their sum is the loss to minimise."""
    q = out["q_c"]
    log_q = F.log_softmax(out["logits_c"], dim=-1)
    terms = {
        "loss.recon": (q * reconstruction_nll(x, out)).sum(1).mean(),
        "loss.kl.z": w.kl_weight * (q * kl_gaussians(out["mu"], out["logvar"], model.prior_mean,
                                                     model.prior_logvar)).sum(1).mean(),
        "loss.kl.c": (q * (log_q - model.log_pi()[None])).sum(1).mean(),
    }
    if w.classifier:
        if labelled.any():
            logp_y = class_log_probs(log_q[labelled], w.num_classes)
            ce = F.nll_loss(logp_y, y[labelled])
        else:
            ce = x.new_zeros(())
        terms["loss.classifier"] = w.classifier * ce
    if w.diversity:
        terms["loss.diversity"] = -w.diversity * entropy(q.mean(0))
    if w.dirichlet:
        # -log Dir(pi | alpha) without its constant, spread over the training set's examples.
        terms["loss.dirichlet"] = -w.dirichlet * (w.dirichlet_alpha - 1.0) * model.log_pi().sum() / w.num_train
    return terms
