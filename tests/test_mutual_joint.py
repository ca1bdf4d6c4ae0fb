"""One joint step and evaluation of a pair on tiny digits models (task-agnostic functions)."""
from __future__ import annotations

import pytest
import torch

from projects.mutual.config import Config
from projects.mutual.joint import evaluate, iterate_batches, joint_step, make_optimizer
from projects.mutual.methods import build_method
from projects.mutual.tasks import get_task
from tracking import resolve_config
from tracking.metrics import validate_name


@pytest.fixture(scope="module")
def setup():
    cfg = resolve_config(Config, "quick", ["condition=noise20", "data.max_train=128"])
    task = get_task(cfg.problem)(cfg)
    return cfg, task, task.load_data()


def _pair(cfg, task, data):
    torch.manual_seed(0)
    a, b = task.build_models(data)
    return a, b, make_optimizer(a, cfg.train), make_optimizer(b, cfg.train)


def test_joint_step_trains_both_and_reports_metrics(setup):
    cfg, task, data = setup
    a, b, oa, ob = _pair(cfg, task, data)
    before = [p.detach().clone() for p in list(a.parameters()) + list(b.parameters())]
    x, y, idx = next(iterate_batches(data.train, 64, torch.Generator().manual_seed(0), with_index=True))
    result = joint_step(task, build_method(cfg.method), a, b, oa, ob, (x, y), epoch=0.0, step=1,
                        groups={"noisy": data.train.noisy[idx]})
    after = list(a.parameters()) + list(b.parameters())
    assert all(not torch.equal(p0, p1) for p0, p1 in zip(before, after) if p1.grad is not None)
    metrics = result.metrics()
    assert all(validate_name(k) for k in metrics)
    assert {"loss.a.total", "loss.b.task", "diag.a.grad_norm", "diag.b.mask_ratio_noisy"} <= set(metrics)
    assert metrics["diag.a.mask_ratio"] + metrics["diag.b.mask_ratio"] <= 1.0 + 1e-9  # hard: never both


def test_a_frozen_peer_is_not_updated_but_still_teaches(setup):
    cfg, task, data = setup
    a, b, oa, ob = _pair(cfg, task, data)
    b_before = [t.clone() for t in b.state_dict().values()]
    x, y = next(iterate_batches(data.train, 64, torch.Generator().manual_seed(0)))
    result = joint_step(task, build_method("naive"), a, b, oa, ob, (x, y), update_b=False)
    assert all(torch.equal(s, t) for s, t in zip(b_before, b.state_dict().values()))  # BN stats too
    assert not b.training and a.training and "b" not in result.grad_norms
    assert result.losses.a.imitation.item() > 0


def test_evaluate_gives_accuracy_per_model_and_split(setup):
    cfg, task, data = setup
    a, b, _, _ = _pair(cfg, task, data)
    a.train()
    out = evaluate(task, {"a": a, "b": b}, data.val, batch_size=50)
    assert set(out) == {f"metric.{m}.{k}.val" for m in "ab" for k in ("accuracy", "loss")}
    assert all(0.0 <= out[f"metric.{m}.accuracy.val"] <= 1.0 for m in "ab") and a.training
    logits = a.eval()(data.val.x)
    assert out["metric.a.accuracy.val"] == pytest.approx((logits.argmax(1) == data.val.y).float().mean().item())
