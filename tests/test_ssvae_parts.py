"""SSVAE building blocks without a tracking store: data split, loss terms, statistics,
providers' disabled branches, the figure that cannot be drawn, config validation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from projects.ssvae import components as comp
from projects.ssvae import data, figures
from projects.ssvae.losses import LossWeights, class_log_probs, loss_terms
from projects.ssvae.model import SSVAE
from projects.ssvae.train import Config
from tracking import ConfigError, resolve_config


def test_labelled_split_is_fixed_per_seed_stratified_and_changes_with_seed():
    a = data.load("digits", labelled_fraction=0.1, seed=3)
    b = data.load("digits", labelled_fraction=0.1, seed=3)
    c = data.load("digits", labelled_fraction=0.1, seed=4)
    assert np.array_equal(a.labelled, b.labelled) and np.array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.labelled, c.labelled)
    assert a.x_train.min() >= 0.0 and a.x_train.max() <= 1.0
    counts = np.bincount(a.y_train[a.labelled], minlength=10)
    assert counts.min() >= 10 and abs(a.labelled.mean() - 0.1) < 0.01  # every class has its share
    assert len(a.y_train) + len(a.y_test) == 1797 and a.num_classes == 10


def test_torchvision_dataset_is_never_downloaded(tmp_path):
    with pytest.raises(data.DataError, match="needs data.root"):
        data.load("mnist")
    with pytest.raises(data.DataError, match="is not a folder"):
        data.load("mnist", root=str(tmp_path / "nope"))
    with pytest.raises(data.DataError, match="MNIST not found under data.root"):
        data.load("mnist", root=str(tmp_path))
    assert list(tmp_path.iterdir()) == []  # nothing fetched or created


def _batch(k=10, decoder="gaussian", prior="mixture", learn_pi=True):
    torch.manual_seed(0)
    s = data.load("digits", max_train=64, seed=0)
    model = SSVAE(64, (8, 8), num_components=k, latent_dim=3, hidden=16, prior=prior,
                  learn_pi=learn_pi, decoder=decoder)
    x, y = torch.as_tensor(s.x_train[:32]), torch.as_tensor(s.y_train[:32])
    lab = torch.zeros(32, dtype=torch.bool)
    lab[:8] = True
    return model, x, y, lab


def test_loss_terms_follow_the_weights_and_their_sum_is_what_is_minimised():
    model, x, y, lab = _batch()
    w = LossWeights(kl_weight=0.5, classifier=2.0, diversity=1.0, dirichlet=1.0, dirichlet_alpha=3.0,
                    num_classes=10, num_train=64)
    terms = loss_terms(model, model(x), x, y, lab, w)
    assert set(terms) == {"loss.recon", "loss.kl.z", "loss.kl.c", "loss.classifier", "loss.diversity",
                          "loss.dirichlet"}
    assert all(torch.isfinite(v) for v in terms.values())
    assert terms["loss.diversity"] < 0  # a reward: minus the entropy of the average responsibility
    off = loss_terms(model, model(x), x, y, lab, LossWeights(num_classes=10, num_train=64))
    assert set(off) == {"loss.recon", "loss.kl.z", "loss.kl.c"}
    total = sum(terms.values())
    total.backward()
    assert model.pi_logits.grad is not None and model.pi_logits.grad.abs().sum() > 0


def test_class_probabilities_group_components_by_label():
    log_q = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]]))
    p = class_log_probs(log_q, 2).exp()
    assert torch.allclose(p, torch.tensor([[0.4, 0.6]]))


def test_bernoulli_and_normal_prior_models_run_and_sample():
    model, x, y, lab = _batch(decoder="bernoulli", prior="normal", learn_pi=False)
    out = model(x)
    assert "log_sigma" not in out and out["mean_logits"].shape == (32, 10, 64)
    imgs = model.sample(3, 4)
    assert imgs.shape == (4, 64) and 0 <= imgs.min() and imgs.max() <= 1


def test_gaussian_decoder_sigma_stays_inside_its_clamp():
    model, x, *_ = _batch()
    with torch.no_grad():
        model.dec_log_sigma.bias.fill_(50.0)
        hi = model(x)["log_sigma"].exp()
        model.dec_log_sigma.bias.fill_(-50.0)
        lo = model(x)["log_sigma"].exp()
    assert torch.allclose(hi, torch.tensor(1.0)) and torch.allclose(lo, torch.tensor(0.05))


def test_statistics():
    q = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    assert comp.k_eff(q) == pytest.approx(2.0)
    assert comp.confidence(np.array([[0.5, 0.5], [0.9, 0.1]])) == pytest.approx(0.7)
    assert comp.active_components(q, 0.01) == 2
    tau = comp.tau_matrix(np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0]]), np.array([1, 0]), 2)
    assert tau[0].argmax() == 1 and tau[1].argmax() == 0
    assert np.allclose(tau[2], 0.5)  # a component no labelled image uses votes for nothing
    assert list(comp.tau_predict(np.array([[1.0, 0, 0], [0, 1.0, 0]]), tau)) == [1, 0]


def test_latent_space_figure_of_a_1d_latent_fails_with_a_reason():
    with pytest.raises(ValueError, match="latent_dim >= 2"):
        figures.latent_space(np.zeros((5, 1)), np.zeros(5))
    fig, how = figures.latent_space(np.random.RandomState(0).randn(20, 5), np.arange(20) % 10)
    assert how.startswith("PCA")


def test_providers_explain_how_to_enable_what_is_off():
    cfg = resolve_config(Config, None, ["tau_classifier.enabled=false", "diagnostics.figures=false",
                                        "classifier.weight=0", "dirichlet.weight=1", "model.learn_pi=false"])
    ctx = comp.Context(cfg, None, None, data.load("digits", max_train=64), None, None, None, None)
    from tracking.components import evaluate

    def result(name):  # what run.report_components records for it
        return evaluate(comp.COMPONENTS.resolve(name, cfg, ctx))

    tau = result("tau_classifier")
    assert tau.status == "disabled" and tau.enable == "--set tau_classifier.enabled=true"
    assert result("classifier").enable == "--set classifier.weight=1.0"
    d = result("dirichlet")
    assert d.status == "disabled" and "learn_pi is false" in d.reason and "learn_pi=true" in d.enable
    for name in ("figures.latent_space", "figures.reconstructions", "figures.component_samples"):
        r = result(name)
        assert r.status == "disabled" and r.enable == "--set diagnostics.figures=true"


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="model.sigma_max"):
        resolve_config(Config, None, ["model.sigma_min=0.5", "model.sigma_max=0.1"])
    with pytest.raises(ConfigError, match="model.num_components"):
        resolve_config(Config, None, ["model.num_components=0"])
    with pytest.raises(ConfigError, match="did you mean"):
        resolve_config(Config, None, ["model.num_component=3"])
    for name in ("default", "quick", "ablation_k20"):
        assert resolve_config(Config, name).data.dataset == "digits"


def _idx(path, array):
    """Write an array in the IDX format MNIST ships in (big-endian dims, unsigned bytes)."""
    import struct

    magic = 0x0800 | array.ndim
    path.write_bytes(struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
                     + array.astype(np.uint8).tobytes())


@pytest.mark.slow  # importing torchvision alone takes seconds
def test_mnist_files_already_on_disk_are_read(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.RandomState(0)
    for prefix, n in (("train", 50), ("t10k", 20)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", rng.randint(0, 256, (n, 28, 28)))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    s = data.load("mnist", root=str(tmp_path), labelled_fraction=0.2, seed=0)
    assert s.x_train.shape == (50, 784) and s.x_test.shape == (20, 784) and s.image_shape == (28, 28)
    assert s.labelled.sum() == 10 and 0.0 <= s.x_train.min() and s.x_train.max() <= 1.0
    assert sorted(p.name for p in raw.iterdir()) == sorted(f"{a}-{b}-idx{d}-ubyte" for a in ("train", "t10k")
                                                          for b, d in (("images", 3), ("labels", 1)))
