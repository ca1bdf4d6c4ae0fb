"""Segmentation in the mutual-learning layer: config fit checks, the U-Net / FCN / LR-ASPP
models at any size, corpus-level mIoU with void pixels excluded, the per-pixel SSMO mask in a
joint step, a run on a real store (metrics, floor, export schema), the missing-root error
from the CLI, and resume after SIGKILL."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from projects.mutual.config import Config
from tests.helpers import PYTHON, REPO, all_runs, run_cli, sigkill_after_checkpoint
from tracking import ConfigError, resolve_config

TINY_SETS = ["seg.n_train=24", "seg.n_val=8", "seg.n_test=8", "seg.image_size=16", "seg.shift_image_size=24",
             "train.epochs=2", "train.batch_size=8", "train.probe_size=8", "model_a.width=4", "model_b.width=4"]


def _argv(*extra: str) -> list[str]:
    return ["--config", "segmentation_quick"] + [a for s in (*TINY_SETS, *extra) for a in ("--set", s)]


def _task(*over: str):
    from projects.mutual.tasks import get_task

    cfg = resolve_config(Config, "segmentation_quick", [*TINY_SETS, *over])
    task = get_task("segmentation")(cfg)
    return task, task.load_data()


# ---------------------------------------------------------------------------------- config
def test_segmentation_configs_resolve_and_conditions_name_the_knobs():
    quick, full = resolve_config(Config, "segmentation_quick"), resolve_config(Config, "segmentation_shapes")
    assert (full.problem, full.data.dataset, full.model_a.name, full.model_b.name) == \
        ("segmentation", "shapes", "unet", "fcn")
    assert (full.seg.image_size, full.seg.shift_image_size) == (64, 96) and quick.seg.image_size == 32
    cfg = resolve_config(Config, "segmentation_quick", ["condition=domain_shift+corrupt_contrast_3+resolution_shift"])
    assert cfg.condition == "corrupt_contrast_3+resolution_shift+domain_shift"
    assert cfg.perturbation.domain_shift and cfg.perturbation.resolution_shift and cfg.perturbation.severity == 3
    named = resolve_config(Config, "segmentation_quick", ["perturbation.domain_shift=true"])
    assert named.condition == "domain_shift" and named.perturbation.knobs()["domain_shift"] is True
    assert "domain_shift" not in resolve_config(Config, "quick").perturbation.knobs()  # reported only when on


@pytest.mark.parametrize("config, overrides, words", [
    ("segmentation_quick", ["data.dataset=voc", "condition=domain_shift"],
     ["domain_shift needs problem=segmentation with data.dataset=shapes", "valid here: clean, weak_peer, corrupt"]),
    ("segmentation_quick", ["condition=noise40"], ["noise<NN> needs problem=classification", "resolution_shift"]),
    ("segmentation_quick", ["model_a.name=mlp"], ["model_a.name=mlp is a classification model",
                                                   "valid for segmentation: unet, fcn, lraspp"]),
    ("segmentation_quick", ["data.dataset=digits"], ["data.dataset=digits is a classification dataset"]),
    ("segmentation_quick", ["seg.min_shapes=5"], ["seg.min_shapes=5 > seg.max_shapes=4"]),
    ("quick", ["condition=domain_shift"], ["domain_shift needs problem=segmentation"]),
    ("quick", ["condition=resolution_shift"], ["needs problem=operator or problem=segmentation"]),
    ("operator_quick", ["condition=corrupt_contrast_3"], ["needs problem=classification or problem=segmentation"]),
])
def test_what_does_not_fit_segmentation_is_one_line(config, overrides, words):
    with pytest.raises(ConfigError) as exc:
        resolve_config(Config, config, overrides)
    msg = str(exc.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


# ---------------------------------------------------------------------------------- models
@pytest.mark.parametrize("name, sizes", [("unet", {"width": 4, "depth": 3}), ("fcn", {"width": 4, "depth": 3}),
                                         ("lraspp", {})])
def test_segmenters_map_any_size_to_logits_of_that_size(name, sizes):
    from projects.mutual.models import build_segmenter

    model = build_segmenter(name, 3, 5, **sizes).eval()
    for h, w in ((32, 32), (21, 35)) if name == "lraspp" else ((32, 32), (48, 40), (21, 35)):
        assert model(torch.rand(2, 3, h, w)).shape == (2, 5, h, w)
    with pytest.raises(ValueError, match="is a segmentation model and does not fit problem=classification"):
        from projects.mutual.models import build_model

        build_model(name, (3, 8, 8), 5)


# ---------------------------------------------------------------------------------- task
def _onehot_logits(pred: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(pred, k).permute(0, 3, 1, 2).float() * 10


def test_miou_is_corpus_level_excludes_absent_classes_and_ignores_void():
    """Two images: the per-image mean IoU would differ from sum(I)/sum(U). Class 3 appears in
    neither prediction nor truth (excluded); void pixels change nothing whatever is predicted."""
    task, _ = _task()
    task.num_classes = 4
    truth = torch.tensor([[[0, 0, 1, 1]], [[2, 2, 2, 1]]])          # (2, 1, 4)
    pred = torch.tensor([[[0, 1, 1, 1]], [[2, 0, 0, 1]]])
    values = task.metrics(_onehot_logits(pred, 4), truth)
    values["loss"] = torch.zeros(2)
    got = task.reduce_metrics(values)
    # corpus: class 0: I=1, U=4; class 1: I=3, U=4; class 2: I=1, U=3 (per-image means: 0.514)
    assert got["miou"] == pytest.approx((1 / 4 + 3 / 4 + 1 / 3) / 3)
    assert got["pixel_accuracy"] == pytest.approx(5 / 8)
    void = truth.clone()
    void[0, 0, 0] = 255
    for p in (0, 3):   # whatever is predicted at the void pixel
        pred_v = pred.clone()
        pred_v[0, 0, 0] = p
        v = task.metrics(_onehot_logits(pred_v, 4), void)
        v["loss"] = torch.zeros(2)
        assert task.reduce_metrics(v)["pixel_accuracy"] == pytest.approx(4 / 7)
        assert task.reduce_metrics(v)["miou"] == pytest.approx((0 / 3 + 3 / 4 + 1 / 3) / 3)
    assert task.valid_mask(void)[0, 0, 0] == 0 and task.valid_mask(void).sum() == 7


def test_evaluate_sums_counts_across_batches_and_the_floor_is_the_majority_map(tmp_path):
    from projects.mutual.joint import evaluate

    task, data = _task()

    class Const(torch.nn.Module):   # background everywhere
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.tensor([1.0] + [0.0] * (data.num_classes - 1)))

        def forward(self, x):
            return self.bias.view(1, -1, 1, 1).expand(x.shape[0], -1, *x.shape[-2:])

    small = evaluate(task, {"m": Const()}, data.test, batch_size=3)
    whole = evaluate(task, {"m": Const()}, data.test)
    assert small["metric.m.miou.test"] == pytest.approx(whole["metric.m.miou.test"])
    floor = data.info["majority_floor"]
    assert floor["class"] == "background"
    assert floor["test"]["miou"] == pytest.approx(whole["metric.m.miou.test"], abs=1e-4)
    assert floor["test"]["pixel_accuracy"] == pytest.approx(whole["metric.m.pixel_accuracy.test"], abs=1e-4)
    assert floor["test"]["pixel_accuracy"] == pytest.approx(float((data.test.y == 0).float().mean()), abs=1e-4)


def test_ssmo_hard_masks_per_pixel_and_void_pixels_carry_no_imitation():
    from projects.mutual.joint import joint_step, make_optimizer
    from projects.mutual.methods import build_method

    task, data = _task("method.name=ssmo-hard")
    a, b = task.build_models(data)
    x, y = data.train.x[:6], data.train.y[:6].clone()
    y[:, :4] = 255                                             # a void band
    result = joint_step(task, build_method(task.cfg.method), a, b, make_optimizer(a, task.cfg.train),
                        make_optimizer(b, task.cfg.train), (x, y))
    wa, wb = result.losses.a.weight, result.losses.b.weight
    assert wa.shape == y.shape and 0 < result.metrics()["diag.a.mask_ratio"] < 1
    valid = y != 255
    assert torch.all((wa + wb)[valid] <= 1)                    # never both imitate the same pixel
    la = task.per_sample_loss(task.forward(a, x), y)
    assert torch.all(la[~valid] == 0)
    out_a, out_b = a(x), b(x)
    noisy_b = out_b.clone()
    noisy_b[:, :, :4] += 5 * torch.randn_like(noisy_b[:, :, :4])  # the peer changes only on void pixels
    method = build_method(task.cfg.method)
    ref = method(la, la + 1, out_a, out_b, task.divergence, valid=task.valid_mask(y))
    got = method(la, la + 1, out_a, noisy_b, task.divergence, valid=task.valid_mask(y))
    assert torch.allclose(ref.a.imitation, got.a.imitation)
    per_image, _ = _task("seg.granularity=image")
    assert per_image.per_sample_loss(out_a, y).shape == (6,) == per_image.divergence(out_a, out_b).shape


# ---------------------------------------------------------------------------------- runs
def _summary(store, run_id):
    path = store.download_artifacts(run_id, "summary.json", str(store.root / f"s-{run_id[:6]}"))
    return json.loads(open(path).read())


def test_a_run_records_miou_pixel_accuracy_the_floor_and_exports(store, tmp_path):
    from analysis.export import export
    from projects.mutual.train import main

    main(_argv("condition=domain_shift", "method.name=ssmo-soft") + ["--experiment", "mutual_segmentation"])
    (run,) = all_runs(store)
    tags, metrics = run.data.tags, run.data.metrics
    assert run.info.status == "FINISHED" and tags["mutual.problem"] == "segmentation"
    assert tags["mutual.dataset"] == "shapes" and tags["labrun.condition"] == "domain_shift"
    assert (tags["mutual.model_a"], tags["mutual.model_b"]) == ("unet", "fcn")
    for m in ("a", "b"):
        for split in ("train", "val", "test", "test_clean"):
            assert 0 <= metrics[f"metric.{m}.miou.{split}"] <= 1 and f"metric.{m}.pixel_accuracy.{split}" in metrics
        assert f"dynamics.{m}.mask_ratio" in metrics and 0 <= metrics[f"diag.{m}.mask_ratio"] <= 1
    s = _summary(store, run.info.run_id)
    data = s["results"]["data"]
    assert data["domain_shift"] == ["texture", "palette"] and data["sizes"]["test"] == [16, 16]
    assert 0 < data["majority_floor"]["test"]["miou"] < 0.5 and data["class_names"][0] == "background"
    hist = store.get_metric_history(run.info.run_id, "metric.a.miou.val")
    assert s["results"]["per_model"]["a"]["best.miou.val"] == pytest.approx(max(h.value for h in hist))
    (path,) = export(["mutual_segmentation"], tmp_path / "out", schema=REPO / "projects/mutual/export_segmentation.yaml")
    (row,) = list(csv.DictReader(open(path)))
    assert row["task"] == "segmentation" and row["condition"] == "domain_shift" and row["model2"] == "fcn"
    assert 0 <= float(row["model1_final_test_miou"]) <= 1 and 0 < float(row["model2_final_test_pixel_accuracy"]) <= 1


def test_a_missing_voc_root_exits_2_in_one_line_with_no_run(store):
    proc = run_cli([PYTHON, "-m", "labrun", "run", "mutual", "--config", "segmentation_quick", "--set",
                    "data.dataset=voc", "--set", f"data.path={store.root / 'nowhere'}"], cwd=store.root, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "no voc set there" in lines[0] and "--set data.path=" in lines[0]
    assert all_runs(store) == []


@pytest.mark.slow
def test_resume_after_sigkill_reproduces_the_uninterrupted_run(store):
    from projects.mutual.train import main

    args = _argv("train.epochs=4", "checkpoint.every=1", "condition=corrupt_gaussian_noise_3", "method.name=ssmo-hard")
    victim_id, reference_id = sigkill_after_checkpoint(
        store, "projects.mutual.train", [*args, "--set", "train.sleep_s=1.5"], "cp_2.ptz",
        reference=lambda: main(args))
    main(["--resume", victim_id])
    resumed = [r for r in all_runs(store) if r.data.tags.get("labrun.resumed_from") == victim_id][0]
    assert int(resumed.data.tags["labrun.resumed_step"]) >= 2
    keys = [k for k in store.get_run(reference_id).data.metrics if not k.startswith("perf.")]
    assert "metric.a.miou.test_clean" in keys
    for key in keys:
        ref = [(m.step, m.value) for m in store.get_metric_history(reference_id, key)]
        got = [(m.step, m.value) for m in store.get_metric_history(resumed.info.run_id, key)]
        assert sorted(got) == sorted(ref), key
