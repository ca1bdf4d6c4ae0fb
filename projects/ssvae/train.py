"""Semi-supervised VAE with a mixture-of-Gaussians prior: the ``ssvae`` entry point.

    python -m projects.ssvae.train --config quick --set model.num_components=20
    labrun run ssvae --config quick
    mlflow run . -e ssvae --env-manager local -P config=quick

Trains on a labelled fraction of the data plus the rest unlabelled, logs the loss terms
(``loss.recon``, ``loss.kl.z``, ``loss.kl.c``, ``loss.classifier``, ``loss.diversity``,
``loss.dirichlet``; they sum to ``loss.total``), accuracy, ``metric.k_eff`` and
``metric.responsibility.confidence`` per epoch, and reports every optional component as
success, disabled (with the reason and the override that enables it) or failed.
"""
from __future__ import annotations

from tracking import TrainerState, load_config, start_run
from tracking.config import exit_with_config_error

# The schema lives in config.py (torch-free); re-exported because `Config` here is the contract.
from projects.ssvae.config import (ClassifierConfig, Config, DataConfig, DiagnosticsConfig,  # noqa: F401
                                   DirichletConfig, DiversityConfig, ModelConfig, TauConfig, TrainConfig)


def load_data(cfg: Config):
    from projects.ssvae import data

    d = cfg.data
    return data.load(d.dataset, root=d.root, labelled_fraction=d.labelled_fraction,
                     test_fraction=d.test_fraction, max_train=d.max_train, seed=cfg.seed)


def loss_weights(cfg: Config, split) -> "LossWeights":
    from projects.ssvae.components import classifier_active, dirichlet_active
    from projects.ssvae.losses import LossWeights

    return LossWeights(
        kl_weight=cfg.model.kl_weight,
        classifier=cfg.classifier.weight if classifier_active(cfg, split.num_classes) else 0.0,
        diversity=cfg.diversity.weight,
        dirichlet=cfg.dirichlet.weight if dirichlet_active(cfg) else 0.0,
        dirichlet_alpha=cfg.dirichlet.alpha, num_classes=split.num_classes,
        num_train=len(split.y_train))


def build_model(cfg: Config, split):
    from projects.ssvae.model import SSVAE

    m = cfg.model
    return SSVAE(split.num_features, split.image_shape, num_components=m.num_components,
                 latent_dim=m.latent_dim, hidden=m.hidden, encoder=m.encoder, prior=m.prior,
                 learn_pi=m.learn_pi, decoder=m.decoder, sigma_min=m.sigma_min,
                 sigma_max=m.sigma_max, prior_spread=m.prior_spread)


class History(TrainerState):
    """Per-epoch mixture weights and responsibilities for the figures: checkpointed."""

    def __init__(self) -> None:
        self.epoch: list[int] = []
        self.pi: list[list[float]] = []
        self.resp: list[list[float]] = []


def main(argv: list[str] | None = None) -> None:
    cfg = load_config(Config, argv)
    from projects.ssvae.data import DataError

    try:  # before the run exists: bad data settings leave nothing in the store
        split = load_data(cfg)
    except DataError as exc:
        exit_with_config_error(str(exc), cfg)

    with start_run(cfg) as run:
        _train(cfg, run, split)


def _train(cfg: Config, run, split) -> None:
    import torch

    from projects.ssvae import components as comp

    dev = run.device
    run.results["data"] = split.describe()
    run.log_dataset(split.x_train, targets=split.y_train, name=cfg.data.dataset, split="train", source=cfg.data.root)
    run.log_dataset(split.x_test, targets=split.y_test, name=cfg.data.dataset, split="test", source=cfg.data.root)
    run.log.info("data: %s", split.describe())
    xtr, ytr = torch.as_tensor(split.x_train, device=dev), torch.as_tensor(split.y_train, device=dev)
    lab, xte = torch.as_tensor(split.labelled, device=dev), torch.as_tensor(split.x_test, device=dev)
    model = build_model(cfg, split).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    sampler = torch.Generator().manual_seed(cfg.seed)
    weights = loss_weights(cfg, split)
    tau_on = comp.tau_disabled_reason(cfg, split.num_classes) is None
    history = History()
    run.track_state(model=model, optimizer=opt, sampler=sampler, history=history)
    loss_keys = ["loss.total", "loss.recon", "loss.kl.z", "loss.kl.c"] + [
        k for k, w in (("loss.classifier", weights.classifier), ("loss.diversity", weights.diversity),
                       ("loss.dirichlet", weights.dirichlet)) if w]
    shown = loss_keys + ["metric.accuracy.train", "metric.accuracy.val", "metric.k_eff",
                         "metric.responsibility.confidence"]
    final: dict[str, float] = {}
    epochs = cfg.train.epochs
    loop = run.steps(epochs, desc="ssvae", unit="epoch")
    for epoch in loop:
        if cfg.train.fail_at_epoch == epoch:
            raise RuntimeError(f"injected failure at epoch {epoch} (train.fail_at_epoch)")
        metrics = _train_epoch(model, opt, sampler, (xtr, ytr, lab), weights, loss_keys, cfg.train.batch_size)
        if epoch % cfg.train.eval_every == 0 or epoch == epochs:
            metrics.update(_evaluate(model, xtr, xte, split, tau_on))
        history.epoch.append(epoch)
        history.pi.append(model.pi().detach().cpu().tolist())
        history.resp.append(_mean_resp(model, xtr))
        run.log_metrics(metrics, step=epoch)
        run.epoch_line(epoch, epochs, metrics, loop.elapsed_s, keys=shown)
        final = metrics

    model.eval()
    ctx = comp.Context(cfg, run, model, split, xtr, xte, comp.encode(model, xtr), comp.encode(model, xte),
                       vars(history), final)
    for name in ("diag.mixture.active_components", "diag.tau.labels_covered"):
        run.set_direction(name, "max")
    run.report_components(comp.COMPONENTS, ctx)
    run.log_model(model, xte[:4])
    run.results.update({k: final[k] for k in shown if k in final})


def _train_epoch(model, opt, sampler, tensors, weights, loss_keys: list[str], batch_size: int) -> dict[str, float]:
    """One pass over the shuffled training set; returns each loss term's per-example mean.

    ``loss.total`` is accumulated from the very tensor that is minimised, not re-added
    from the terms, so the test that the terms sum to it checks something real.
    """
    import torch

    from projects.ssvae.losses import loss_terms

    x, y, lab = tensors
    n = x.shape[0]
    model.train()
    sums = dict.fromkeys(loss_keys, 0.0)
    perm = torch.randperm(n, generator=sampler).to(x.device)
    for i in range(0, n, batch_size):
        idx = perm[i:i + batch_size]
        terms = loss_terms(model, model(x[idx]), x[idx], y[idx], lab[idx], weights)
        total = sum(terms.values())
        opt.zero_grad()
        total.backward()
        opt.step()
        sums["loss.total"] += total.item() * len(idx)
        for k, v in terms.items():
            sums[k] += v.item() * len(idx)
    return {k: v / n for k, v in sums.items()}


def _mean_resp(model, x) -> list[float]:
    import torch

    with torch.no_grad():
        return model.encode(x)[0].softmax(-1).mean(0).cpu().tolist()


def _evaluate(model, xtr, xte, split, tau_on: bool) -> dict[str, float]:
    """Per-epoch metrics. Accuracy uses the tau-classifier fitted on the labelled images only;
    train accuracy is over all training images (labels of the unlabelled ones are used only here)."""
    from projects.ssvae import components as comp

    tr, te = comp.encode(model, xtr), comp.encode(model, xte)
    out = {"metric.k_eff": comp.k_eff(tr.q_c), "metric.responsibility.confidence": comp.confidence(tr.q_c)}
    if tau_on:
        tau = comp.tau_matrix(tr.q_c[split.labelled], split.y_train[split.labelled], split.num_classes)
        out["metric.accuracy.train"] = float((comp.tau_predict(tr.q_c, tau) == split.y_train).mean())
        out["metric.accuracy.val"] = float((comp.tau_predict(te.q_c, tau) == split.y_test).mean())
    if tr.sigma is not None:
        out["diag.sigma.mean"] = float(tr.sigma.mean())
    return out


if __name__ == "__main__":
    main()
