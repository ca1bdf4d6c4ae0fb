"""The SSVAE's optional parts as component providers, and the statistics they report.

Each provider returns ``ComponentResult.success`` (data, metrics, figures) or ``disabled``
(why, and the override that switches it on); anything that raises is recorded as
``failed`` by ``run.component`` and the run still finishes. Nothing is dropped silently.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tracking import ComponentResult, Components, Gate

from projects.ssvae import figures


# --------------------------------------------------------------------------- statistics

@dataclass
class Encoded:
    """What the encoder says about a set of images (no sampling: deterministic)."""

    q_c: np.ndarray          # [N, K] responsibilities q(c|x)
    z_mean: np.ndarray       # [N, D] E_q[z] = sum_c q(c|x) mu(x, c)
    sigma: np.ndarray | None  # [N] mean decoder sigma per image (Gaussian decoder only)


@torch.no_grad()
def encode(model, x: torch.Tensor, batch_size: int = 1024) -> Encoded:
    q_parts, z_parts, s_parts = [], [], []
    was_training = model.training
    model.eval()
    for i in range(0, x.shape[0], batch_size):
        out = model(x[i:i + batch_size], sample=False)
        q = out["q_c"]
        q_parts.append(q.cpu())
        z_parts.append((q[..., None] * out["mu"]).sum(1).cpu())
        if "log_sigma" in out:
            s_parts.append((q[..., None] * out["log_sigma"].exp()).sum(1).mean(-1).cpu())
    model.train(was_training)
    return Encoded(torch.cat(q_parts).numpy(), torch.cat(z_parts).numpy(),
                   torch.cat(s_parts).numpy() if s_parts else None)


def k_eff(q_c: np.ndarray) -> float:
    """exp(entropy of the average responsibilities): how many components are really used."""
    p = q_c.mean(0)
    p = p[p > 0]
    return float(math.exp(-(p * np.log(p)).sum()))


def confidence(q_c: np.ndarray) -> float:
    """Mean of max_c q(c|x): 1 when every image sits firmly in one component."""
    return float(q_c.max(1).mean())


def active_components(q_c: np.ndarray, threshold: float) -> int:
    return int((q_c.mean(0) >= threshold).sum())


def tau_matrix(q_c: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """tau[c, y] = share of component c's labelled responsibility that belongs to label y.

    A component no labelled image uses gets a uniform row, so it votes for nothing.
    """
    onehot = np.eye(num_classes)[labels]
    mass = q_c.T @ onehot  # [K, C]
    total = mass.sum(1, keepdims=True)
    return np.where(total > 1e-12, mass / np.maximum(total, 1e-12), 1.0 / num_classes)


def tau_predict(q_c: np.ndarray, tau: np.ndarray) -> np.ndarray:
    return (q_c @ tau).argmax(1)


# --------------------------------------------------------------------------- providers

@dataclass
class Context:
    """Everything the providers look at once training is over."""

    cfg: Any
    run: Any
    model: Any
    data: Any                 # data.SplitData
    x_train: torch.Tensor
    x_test: torch.Tensor
    train: Encoded
    test: Encoded
    history: dict[str, list] = field(default_factory=dict)
    final: dict[str, float] = field(default_factory=dict)
    """The last epoch's logged metrics (loss terms included)."""


COMPONENTS = Components()
"""Every component a run reports, in report order."""

FIGURES = Gate.off("diagnostics.figures")


def _too_few_components(cfg, num_classes: int, what: str) -> ComponentResult | None:
    k = cfg.model.num_components
    if k >= num_classes:
        return None
    return ComponentResult.disabled(
        f"model.num_components={k} < {num_classes} classes: {what}",
        enable=f"--set model.num_components={num_classes} (or more)")


def tau_disabled_reason(cfg, num_classes: int) -> ComponentResult | None:
    return COMPONENTS.disabled("tau_classifier", cfg) or _too_few_components(
        cfg, num_classes, "the tau-classifier maps each component to a label, so with fewer components "
        "than labels some labels could never be predicted (metric.accuracy.* are not logged)")


def classifier_active(cfg, num_classes: int) -> bool:
    return COMPONENTS.disabled("classifier", cfg) is None and cfg.model.num_components >= num_classes


def dirichlet_active(cfg) -> bool:
    return COMPONENTS.disabled("dirichlet", cfg) is None


@COMPONENTS.provider("tau_classifier", enabled_by="tau_classifier.enabled",
                     why="metric.accuracy.* are not logged without it")
def tau_classifier(ctx: Context) -> ComponentResult:
    off = tau_disabled_reason(ctx.cfg, ctx.data.num_classes)
    if off is not None:
        return off
    d = ctx.data
    tau = tau_matrix(ctx.train.q_c[d.labelled], d.y_train[d.labelled], d.num_classes)
    acc_train = float((tau_predict(ctx.train.q_c, tau) == d.y_train).mean())
    acc_test = float((tau_predict(ctx.test.q_c, tau) == d.y_test).mean())
    used = ctx.train.q_c[d.labelled].sum(0) > 1e-6
    mapping = [int(r.argmax()) if u else None for r, u in zip(tau, used)]
    covered = sorted({m for m in mapping if m is not None})
    figs = []
    if ctx.cfg.diagnostics.figures:
        figs.append(ctx.run.log_figure(figures.tau_heatmap(tau), "tau_classifier.png"))
    return ComponentResult.success(
        {"accuracy_train": acc_train, "accuracy_val": acc_test, "labelled_examples": int(d.labelled.sum()),
         "component_to_label": mapping, "labels_covered": len(covered), "num_classes": d.num_classes},
        metrics={"diag.tau.labels_covered": float(len(covered))}, figures=figs)


@COMPONENTS.provider("classifier", gates=[Gate(
    lambda cfg: cfg.classifier.weight == 0,
    "classifier.weight is 0: labelled images only enter the ELBO and the tau-classifier",
    "--set classifier.weight=1.0")])
def classifier(ctx: Context) -> ComponentResult:
    n = ctx.data.num_classes
    off = _too_few_components(ctx.cfg, n, f"the classifier term reads component k as label k mod {n}, "
                                          f"which needs a component per label")
    if off is not None:
        return off
    return ComponentResult.success({"weight": ctx.cfg.classifier.weight,
                                    "labelled_examples": int(ctx.data.labelled.sum()),
                                    "final_loss": ctx.final.get("loss.classifier"),
                                    "component_to_label": "k mod num_classes"})


@COMPONENTS.provider("mixture_prior", gates=[Gate(
    lambda cfg: cfg.model.prior != "mixture",
    "model.prior is 'normal': p(z|c) = N(0, I) for every component (M2-style, the decoder "
    "sees c); no learnable means, no k_eff diagnostics", "--set model.prior=mixture")])
def mixture_prior(ctx: Context) -> ComponentResult:
    cfg = ctx.cfg
    q = ctx.train.q_c
    thr = cfg.diagnostics.active_threshold
    pi = ctx.model.pi().detach().cpu().numpy()
    keff, active = k_eff(q), active_components(q, thr)
    means = ctx.model.prior_mean.detach().cpu().numpy()
    dists = np.linalg.norm(means[:, None] - means[None], axis=-1)[np.triu_indices(len(means), 1)]
    figs = []
    if cfg.diagnostics.figures:
        pis = np.asarray(ctx.history.get("pi") or [pi])
        resp = np.asarray(ctx.history.get("resp") or [q.mean(0)])
        figs.append(ctx.run.log_figure(figures.mixture_weights(pis, resp, ctx.history.get("epoch")),
                                       "mixture_weights.png"))
    return ComponentResult.success(
        {"k_eff": keff, "active_components": active, "active_threshold": thr,
         "num_components": cfg.model.num_components, "learn_pi": cfg.model.learn_pi,
         "pi": [round(float(p), 4) for p in pi],
         "mean_responsibility": [round(float(p), 4) for p in q.mean(0)],
         "min_distance_between_means": float(dists.min()) if dists.size else None},
        metrics={"diag.mixture.active_components": float(active)},
        figures=figs)


@COMPONENTS.provider("heteroscedastic_decoder", gates=[Gate(
    lambda cfg: cfg.model.decoder != "gaussian",
    "model.decoder is 'bernoulli': pixels are Bernoulli means, there is no per-pixel sigma",
    "--set model.decoder=gaussian")])
def heteroscedastic_decoder(ctx: Context) -> ComponentResult:
    m = ctx.cfg.model
    s = ctx.test.sigma  # per held-out image: its mean pixel sigma
    return ComponentResult.success(
        {"sigma_mean": float(s.mean()), "sigma_std": float(s.std()), "sigma_lowest": float(s.min()),
         "sigma_highest": float(s.max()), "clamp": [m.sigma_min, m.sigma_max],
         "split": "test", "per_epoch_series": "diag.sigma.mean (training images)"},
        metrics={"diag.sigma.std": float(s.std())})


@COMPONENTS.provider("diversity", gates=[Gate(
    lambda cfg: cfg.diversity.weight == 0,
    "diversity.weight is 0: no reward or penalty on the entropy of the average responsibilities "
    "(a negative weight penalises it)", "--set diversity.weight=1.0")])
def diversity(ctx: Context) -> ComponentResult:
    w = ctx.cfg.diversity.weight
    q = ctx.train.q_c.mean(0)
    ent = float(-(q * np.log(np.clip(q, 1e-12, None))).sum())
    return ComponentResult.success({"weight": w, "mode": "reward" if w > 0 else "penalty",
                                    "entropy_of_mean_responsibility": ent,
                                    "max_entropy": math.log(len(q)),
                                    "final_loss": ctx.final.get("loss.diversity")})


@COMPONENTS.provider("dirichlet", gates=[
    Gate(lambda cfg: cfg.dirichlet.weight == 0, "dirichlet.weight is 0: no prior on the mixture weights pi",
         "--set dirichlet.weight=1.0 --set model.learn_pi=true"),
    Gate(lambda cfg: not cfg.model.learn_pi,
         "dirichlet.weight > 0 but model.learn_pi is false: pi is fixed (uniform), so a prior on "
         "it would be a constant and is left out of the loss", "--set model.learn_pi=true")])
def dirichlet(ctx: Context) -> ComponentResult:
    pi = ctx.model.pi().detach().cpu().numpy()
    d = ctx.cfg.dirichlet
    return ComponentResult.success({"alpha": d.alpha, "weight": d.weight,
                                    "effect": "spreads pi" if d.alpha > 1 else "sparsifies pi",
                                    "pi_min": float(pi.min()), "pi_max": float(pi.max()),
                                    "final_loss": ctx.final.get("loss.dirichlet")})


@COMPONENTS.provider("figures.latent_space", gates=[FIGURES])
def latent_space(ctx: Context) -> ComponentResult:
    n = min(ctx.cfg.diagnostics.points, len(ctx.data.y_test))
    fig, how = figures.latent_space(ctx.test.z_mean[:n], ctx.data.y_test[:n])
    return ComponentResult.success({"points": n, "projection": how, "split": "test"},
                                   figures=[ctx.run.log_figure(fig, "latent_space.png")])


@COMPONENTS.provider("figures.reconstructions", gates=[FIGURES])
def reconstructions(ctx: Context) -> ComponentResult:
    n = min(ctx.cfg.diagnostics.reconstructions, len(ctx.data.y_test))
    x = ctx.x_test[:n]
    with torch.no_grad():
        out = ctx.model(x, sample=False)
        best = out["q_c"].argmax(1)
        rec = torch.sigmoid(out["mean_logits"][torch.arange(n), best]).cpu().numpy()
    fig = figures.reconstructions(x.cpu().numpy(), rec, ctx.data.image_shape)
    err = float(np.abs(rec - x.cpu().numpy()).mean())
    return ComponentResult.success({"images": n, "mean_abs_error": err},
                                   figures=[ctx.run.log_figure(fig, "reconstructions.png")])


@COMPONENTS.provider("figures.component_samples", gates=[FIGURES])
def component_samples(ctx: Context) -> ComponentResult:
    per = ctx.cfg.diagnostics.samples_per_component
    g = torch.Generator().manual_seed(ctx.cfg.seed)
    grid = [ctx.model.sample(k, per, generator=g).cpu().numpy() for k in range(ctx.model.num_components)]
    weights = ctx.train.q_c.mean(0)
    fig = figures.component_samples(grid, ctx.data.image_shape, weights)
    return ComponentResult.success({"components": len(grid), "samples_per_component": per},
                                   figures=[ctx.run.log_figure(fig, "component_samples.png")])
