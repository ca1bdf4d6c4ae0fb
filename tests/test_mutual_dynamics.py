"""Gradient dynamics on hand-computable cases, and that probing leaves the models untouched."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from projects.mutual.dynamics import gradient_dynamics, gradient_stats
from projects.mutual.methods import build_method
from projects.mutual.tasks.base import Task
from tracking.metrics import validate_name


class Regression(Task):
    """Scalar regression: L = (f(x) - y)^2 per sample, D = (f_a - f_b)^2 per sample."""

    name = "regression"

    def __init__(self):
        super().__init__(cfg=None)

    def load_data(self):
        raise NotImplementedError

    def build_models(self, data):
        raise NotImplementedError

    def forward(self, model, inputs):
        return model(inputs).squeeze(-1)

    def per_sample_loss(self, outputs, targets):
        return (outputs - targets) ** 2

    def divergence(self, student, teacher):
        return (student - teacher) ** 2

    def metrics(self, outputs, targets):
        return {"mse": (outputs - targets) ** 2}


def linear(weights):
    m = nn.Linear(len(weights), 1, bias=False)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([weights]))
    return m


# Three one-hot samples and a 4th input dimension no sample uses (its gradients are exactly 0).
# Per coordinate i < 3: g_task[i] = (2/3)(w[i] - y[i]); g_imit[i] = lam (2/3) m[i] (w[i] - w_peer[i]).
X = torch.eye(4)[:3]
Y = torch.tensor([0.0, 2.0, 0.0])
W_A, W_B = [1.0, 1.0, 1.0, 7.0], [0.0, 0.0, 3.0, 0.0]   # L_A = (1, 1, 1), L_B = (0, 4, 9)


def probe(method):
    return gradient_dynamics(Regression(), method, linear(W_A), linear(W_B), (X, Y))


def test_naive_on_a_linear_model_matches_the_hand_computed_gradients():
    d = probe(build_method("naive", lam=0.5))
    # A: g_task ~ (1, -1, 1, 0), g_imit ~ 0.5 (1, 1, -2, 0): entries 2 and 3 conflict, entry 4 is
    # zero in both and is left out of the denominator -> 2/3.
    assert d["dynamics.a.conflict_rate"] == pytest.approx(2 / 3)
    assert d["dynamics.a.grad_cosine"] == pytest.approx(-2 / math.sqrt(18))
    assert d["dynamics.a.grad_norm_ratio"] == pytest.approx(0.5 * math.sqrt(6) / math.sqrt(3))
    assert d["dynamics.a.mask_ratio"] == 1.0
    # B: g_task ~ (0, -2, 3, 0), g_imit ~ 0.5 (-1, -1, 2, 0): entry 1 is zero in g_task only.
    assert d["dynamics.b.conflict_rate"] == 0.0
    assert d["dynamics.b.grad_cosine"] == pytest.approx(8 / (math.sqrt(13) * math.sqrt(6)))
    assert d["dynamics.b.grad_norm_ratio"] == pytest.approx(0.5 * math.sqrt(6) / math.sqrt(13))


def test_ssmo_hard_on_a_linear_model():
    d = probe(build_method("ssmo-hard", lam=1.0))
    # A imitates sample 1 only (L_B = 0 < 1): g_imit ~ (1, 0, 0, 0)
    assert d["dynamics.a.mask_ratio"] == pytest.approx(1 / 3)
    assert d["dynamics.a.conflict_rate"] == 0.0
    assert d["dynamics.a.grad_cosine"] == pytest.approx(1 / math.sqrt(3))
    assert d["dynamics.a.grad_norm_ratio"] == pytest.approx(1 / math.sqrt(3))
    # B imitates samples 2 and 3: g_imit ~ (0, -1, 2, 0) against g_task ~ (0, -2, 3, 0)
    assert d["dynamics.b.mask_ratio"] == pytest.approx(2 / 3)
    assert d["dynamics.b.conflict_rate"] == 0.0
    assert d["dynamics.b.grad_cosine"] == pytest.approx(8 / math.sqrt(65))
    assert d["dynamics.b.grad_norm_ratio"] == pytest.approx(math.sqrt(5) / math.sqrt(13))


@pytest.mark.parametrize("method", [build_method("independent"), build_method("naive", warmup=5)])
def test_imitation_off_gives_zero_statistics(method):
    d = gradient_dynamics(Regression(), method, linear(W_A), linear(W_B), (X, Y), epoch=1)
    assert set(d) == {f"dynamics.{m}.{k}" for m in "ab"
                      for k in ("conflict_rate", "grad_cosine", "mask_ratio", "grad_norm_ratio")}
    assert all(v == 0.0 for v in d.values()), d
    assert all(validate_name(k) for k in d)


def test_gradient_stats_edge_cases():
    p = [torch.zeros(3)]
    no_task = gradient_stats([torch.zeros(3)], [torch.tensor([1.0, 0.0, 0.0])], p)
    assert math.isnan(no_task["grad_norm_ratio"])  # undefined: only imitation pulls
    assert no_task["conflict_rate"] == 0.0 and no_task["grad_cosine"] == 0.0
    off = gradient_stats([torch.tensor([1.0, -1.0, 0.0])], None, p)
    assert off == {"conflict_rate": 0.0, "grad_cosine": 0.0, "grad_norm_ratio": 0.0}
    exact = gradient_stats([torch.tensor([1.0, -1.0, 2.0]), None], [torch.tensor([-1.0, -3.0, 0.0]), None],
                           [torch.zeros(3), torch.zeros(2)])
    assert exact["conflict_rate"] == 0.5  # entry 3 (imitation 0) and the None block are excluded
    assert exact["grad_cosine"] == pytest.approx(2 / (math.sqrt(6) * math.sqrt(10)))


def test_custom_names_and_bad_names():
    d = gradient_dynamics(Regression(), build_method("naive"), linear(W_A), linear(W_B), (X, Y),
                          names=("mlp", "cnn-small"))
    assert "dynamics.mlp.conflict_rate" in d and "dynamics.cnn-small.grad_norm_ratio" in d
    with pytest.raises(ValueError, match="metric segment"):
        gradient_dynamics(Regression(), build_method("naive"), linear(W_A), linear(W_B), (X, Y), names=("A", "b"))


class Flat(Task):
    name = "flat"

    def __init__(self):
        super().__init__(cfg=None)

    def load_data(self):
        raise NotImplementedError

    def build_models(self, data):
        raise NotImplementedError

    def per_sample_loss(self, outputs, targets):
        return nn.functional.cross_entropy(outputs, targets, reduction="none")

    def divergence(self, student, teacher):
        from projects.mutual.losses import kl_divergence
        return kl_divergence(student, teacher)

    def metrics(self, outputs, targets):
        return {}


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_probing_leaves_grads_modes_buffers_and_rng_alone(mode):
    torch.manual_seed(0)

    def net():
        return nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))

    a, b = net(), net()
    a.train()
    b.eval()
    for p in list(a.parameters()) + list(b.parameters()):
        p.grad = torch.full_like(p, 7.0)
    before = [t.clone() for m in (a, b) for t in m.state_dict().values()]
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    rng = torch.get_rng_state()
    d = gradient_dynamics(Flat(), build_method("naive"), a, b, (x, y), mode=mode)
    assert all(math.isfinite(v) for v in d.values()) and d["dynamics.a.grad_norm_ratio"] > 0
    assert a.training and not b.training
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in list(a.parameters()) + list(b.parameters()))
    after = [t for m in (a, b) for t in m.state_dict().values()]
    assert all(torch.equal(s, t) for s, t in zip(before, after))  # BatchNorm statistics included
    assert torch.equal(torch.get_rng_state(), rng)
