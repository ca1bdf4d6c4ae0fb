"""The mutual-learning method layer: weight rules, stop-gradient, warm-up, the registry."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from projects.mutual.losses import kl_divergence, mse_divergence
from projects.mutual.methods import build_method, get_method, method_names
from projects.mutual.methods.base import MutualMethod
from projects.mutual.registry import UnknownNameError
from tracking.metrics import validate_name


def sq(student, teacher):
    return (student - teacher) ** 2


# Per-sample losses with a tie at index 1: the peer is better for A at 0 and 3, for B at 2.
LA = torch.tensor([1.0, 0.5, 2.0, 0.3])
LB = torch.tensor([0.5, 0.5, 3.0, 0.1])
OUT_A = torch.tensor([0.0, 1.0, 2.0, 3.0])
OUT_B = torch.tensor([1.0, 1.0, 0.0, 1.0])  # D = (a - b)^2 = [1, 0, 4, 4]


def test_registry_lists_the_four_methods_and_each_module_defines_its_class():
    assert set(method_names()) == {"independent", "naive", "ssmo-hard", "ssmo-soft"}
    for name in method_names():
        cls = get_method(name)
        assert issubclass(cls, MutualMethod) and cls.name == name


def test_unknown_method_is_one_line_listing_the_valid_names():
    with pytest.raises(UnknownNameError) as exc:
        get_method("ssmo-medium")
    msg = str(exc.value)
    assert "\n" not in msg and "'ssmo-medium'" in msg
    assert all(n in msg for n in ("independent", "naive", "ssmo-hard", "ssmo-soft"))


def test_hard_mask_picks_exactly_the_samples_where_the_peer_is_better():
    losses = build_method("ssmo-hard", lam=2.0)(LA, LB, OUT_A, OUT_B, sq)
    assert losses.a.weight.tolist() == [1.0, 0.0, 0.0, 1.0]  # tie (index 1) imitates nothing
    assert losses.b.weight.tolist() == [0.0, 0.0, 1.0, 0.0]
    assert losses.a.imitation.item() == pytest.approx((1 + 4) / 4)  # mean over ALL samples
    assert losses.b.imitation.item() == pytest.approx(4 / 4)
    assert losses.a.total.item() == pytest.approx(LA.mean().item() + 2.0 * 5 / 4)
    assert losses.a.mask_ratio == 0.5 and losses.b.mask_ratio == 0.25


def test_soft_weight_is_sigmoid_of_k_times_the_loss_gap():
    k = 3.0
    losses = build_method("ssmo-soft", lam=1.0, k=k)(LA, LB, OUT_A, OUT_B, sq)
    torch.testing.assert_close(losses.a.weight, torch.sigmoid(k * (LA - LB)))
    torch.testing.assert_close(losses.b.weight, torch.sigmoid(k * (LB - LA)))
    d = torch.tensor([1.0, 0.0, 4.0, 4.0])
    assert losses.a.imitation.item() == pytest.approx((torch.sigmoid(k * (LA - LB)) * d).mean().item())
    assert losses.a.mask_ratio == pytest.approx(torch.sigmoid(k * (LA - LB)).mean().item())


def test_naive_weights_are_one_and_independent_zero():
    naive = build_method("naive")(LA, LB, OUT_A, OUT_B, sq)
    indep = build_method("independent")(LA, LB, OUT_A, OUT_B, sq)
    assert naive.a.weight.tolist() == [1.0] * 4 and naive.a.mask_ratio == 1.0
    assert naive.a.imitation.item() == pytest.approx(9 / 4)
    assert indep.a.weight.tolist() == [0.0] * 4 and indep.a.mask_ratio == 0.0
    assert indep.a.imitation.item() == 0.0 and indep.a.total.item() == pytest.approx(LA.mean().item())
    assert indep.a.divergence.item() == pytest.approx(9 / 4)  # still measured, for logging


def _pair():
    torch.manual_seed(0)
    a, b = nn.Linear(3, 4), nn.Linear(3, 4)
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 3, 0, 1])
    out_a, out_b = a(x), b(x)
    ce = nn.functional.cross_entropy
    return a, b, out_a, out_b, ce(out_a, y, reduction="none"), ce(out_b, y, reduction="none")


def test_independent_has_zero_imitation_gradient():
    a, b, out_a, out_b, la, lb = _pair()
    losses = build_method("independent", lam=5.0)(la, lb, out_a, out_b, kl_divergence)
    assert not losses.a.imitation.requires_grad
    g_total = torch.autograd.grad(losses.a.total, list(a.parameters()), retain_graph=True)
    g_task = torch.autograd.grad(losses.a.task, list(a.parameters()), retain_graph=True)
    for gt, gk in zip(g_total, g_task):
        torch.testing.assert_close(gt, gk)


@pytest.mark.parametrize("name", ["naive", "ssmo-hard", "ssmo-soft"])
def test_imitation_gradient_never_reaches_the_peer(name):
    a, b, out_a, out_b, la, lb = _pair()
    losses = build_method(name, lam=1.0)(la, lb, out_a, out_b, kl_divergence)
    to_peer = torch.autograd.grad(losses.a.imitation, list(b.parameters()), retain_graph=True, allow_unused=True)
    assert all(g is None for g in to_peer)
    to_self = torch.autograd.grad(losses.a.imitation, list(a.parameters()), retain_graph=True, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in to_self)
    # nor through A's total into B (B's task loss only reaches B through B's own total)
    assert all(g is None for g in torch.autograd.grad(losses.a.total, list(b.parameters()),
                                                      retain_graph=True, allow_unused=True))


def test_weights_ignore_the_graph_of_the_losses():
    a, b, out_a, out_b, la, lb = _pair()
    losses = build_method("ssmo-soft", k=2.0)(la, lb, out_a, out_b, kl_divergence)
    assert not losses.a.weight.requires_grad and not losses.b.weight.requires_grad
    # the imitation gradient equals that of mean(w_const * KL): no gradient through w(L_A)
    w = torch.sigmoid(2.0 * (la - lb)).detach()
    ref = (w * kl_divergence(out_a, out_b.detach())).mean()
    for g, r in zip(torch.autograd.grad(losses.a.imitation, list(a.parameters()), retain_graph=True),
                    torch.autograd.grad(ref, list(a.parameters()), retain_graph=True)):
        torch.testing.assert_close(g, r)


def test_warmup_then_linear_ramp():
    m = build_method("naive", lam=2.0, warmup=2, ramp=4, warmup_unit="epochs")
    assert [m.scale(epoch=e) for e in (0, 1.9, 2, 3, 4, 6, 10)] == [0, 0, 0, 0.25, 0.5, 1, 1]
    off = m(LA.clone().requires_grad_(), LB.clone().requires_grad_(), OUT_A, OUT_B, sq, epoch=1)
    assert off.a.lam == 0.0 and off.a.mask_ratio == 0.0 and off.scale == 0.0
    assert not off.a.imitation.requires_grad and off.a.imitation.item() == pytest.approx(9 / 4)
    assert off.a.total.item() == pytest.approx(LA.mean().item())
    on = m(LA, LB, OUT_A, OUT_B, sq, epoch=4)
    assert on.a.lam == 1.0 and on.a.total.item() == pytest.approx(LA.mean().item() + 9 / 4)
    steps = build_method("naive", warmup=10, warmup_unit="steps")
    assert steps.scale(step=9) == 0.0 and steps.scale(step=10) == 1.0
    with pytest.raises(ValueError, match="pass step="):
        steps(LA, LB, OUT_A, OUT_B, sq, epoch=3)


def test_per_pixel_losses_mask_per_element_and_valid_mask():
    la = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    lb = torch.tensor([[[2.0, 1.0], [3.0, 0.0]]])
    out_a, out_b = torch.zeros(1, 2, 2), torch.ones(1, 2, 2)  # D = 1 everywhere
    losses = build_method("ssmo-hard")(la, lb, out_a, out_b, lambda s, t: (s - t) ** 2)
    assert losses.a.weight.tolist() == [[[0.0, 1.0], [0.0, 1.0]]]
    assert losses.a.imitation.item() == pytest.approx(0.5)
    valid = torch.tensor([[[1.0, 1.0], [1.0, 0.0]]])
    masked = build_method("ssmo-hard")(la, lb, out_a, out_b, lambda s, t: (s - t) ** 2, valid=valid)
    assert masked.a.task.item() == pytest.approx(2.0)  # (1 + 2 + 3) / 3
    assert masked.a.imitation.item() == pytest.approx(1 / 3) and masked.a.mask_ratio == pytest.approx(1 / 3)


def test_a_divergence_of_the_wrong_shape_is_a_clear_error():
    with pytest.raises(ValueError, match="one value per loss element"):
        build_method("naive")(LA, LB, OUT_A, OUT_B, lambda s, t: ((s - t) ** 2).sum())


def test_kl_divergence_per_sample_with_temperature():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]])
    t = torch.tensor([[0.0, 1.0, 3.0], [0.0, 0.0, 0.0]])
    temp = 2.0
    p, q = torch.softmax(s / temp, 1), torch.softmax(t / temp, 1)
    ref = (q * (q.log() - p.log())).sum(1) * temp ** 2
    torch.testing.assert_close(kl_divergence(s, t, temp), ref)
    assert kl_divergence(s, t, temp)[1].item() == pytest.approx(0.0, abs=1e-7)
    assert kl_divergence(torch.randn(2, 5, 3, 3), torch.randn(2, 5, 3, 3)).shape == (2, 3, 3)
    assert mse_divergence(torch.ones(4, 2, 3), torch.zeros(4, 2, 3)).tolist() == [1.0] * 4


def test_build_from_a_config_section_and_metric_names():
    from projects.mutual.config import Config

    cfg = Config(method={"name": "ssmo-soft", "lam": 0.5, "k": 7.0, "warmup": 1, "ramp": 2})
    m = build_method(cfg.method)
    assert (m.name, m.lam, m.k, m.warmup, m.ramp) == ("ssmo-soft", 0.5, 7.0, 1.0, 2.0)
    metrics = m(LA, LB, OUT_A, OUT_B, sq, epoch=2).metrics()
    assert {"loss.a.task", "loss.b.imitation", "loss.total", "diag.a.mask_ratio"} <= set(metrics)
    assert all(validate_name(k) for k in metrics)
    assert metrics["loss.total"] == pytest.approx(metrics["loss.a.total"] + metrics["loss.b.total"])
    assert not math.isnan(metrics["diag.b.divergence"])
