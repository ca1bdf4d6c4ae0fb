"""Operator learning in the mutual-learning layer: config fit checks, FNO (neuraloperator) and
DeepONet at other resolutions, the task's losses and metrics, a run on a real store, the export
schema and the sweep specs."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from projects.mutual.config import Config
from tests.helpers import PYTHON, REPO, all_runs, run_cli
from tracking import ConfigError, resolve_config


def _tiny(cache: Path, *extra: str) -> list[str]:
    sets = [f"pde.cache_dir={cache}", "pde.n_train=16", "pde.n_val=8", "pde.n_test=8", "train.epochs=2",
            "train.probe_size=8", *extra]
    return ["--config", "operator_quick"] + [a for s in sets for a in ("--set", s)]


# ---------------------------------------------------------------------------------- config
def test_operator_configs_resolve_and_conditions_fill_the_shift_knobs():
    burgers, darcy = resolve_config(Config, "operator_burgers"), resolve_config(Config, "operator_darcy")
    assert (burgers.problem, burgers.data.dataset, burgers.model_a.name, burgers.model_b.name) == \
        ("operator", "burgers", "fno", "deeponet")
    assert darcy.data.dataset == "darcy" and darcy.pde.resolution == 85 and burgers.pde.resolution == 1024
    cfg = resolve_config(Config, "operator_quick", ["condition=weak_peer+resolution_shift"])
    assert cfg.condition == "weak_peer+resolution_shift" and cfg.perturbation.resolution_shift
    assert cfg.perturbation.knobs()["resolution_shift"] is True and cfg.model_b_epochs() == 1
    named = resolve_config(Config, "operator_quick", ["perturbation.viscosity_shift=true"])
    assert named.condition == "viscosity_shift"
    clean = resolve_config(Config, "quick")        # classification knobs read as before
    assert set(clean.perturbation.knobs()) == {"label_noise", "weak_peer", "corruption", "severity"}


@pytest.mark.parametrize("overrides, words", [
    (["model_a.name=mlp", "model_a.modes=null", "model_a.width=null", "model_a.depth=null"],
     ["model_a.name=mlp is a classification model", "valid for operator: fno, tfno, deeponet"]),
    (["data.dataset=digits"], ["data.dataset=digits is a classification dataset", "burgers, darcy"]),
    (["condition=noise40"], ["condition=noise40 does not fit problem=operator", "resolution_shift"]),
    (["data.dataset=darcy", "pde.resolution=17", "pde.shift_resolution=9", "condition=viscosity_shift"],
     ["viscosity_shift needs", "data.dataset=burgers", "coefficient_shift"]),
    (["pde.resolution=100"], ["pde.resolution=100 is not a subsampling", "fine_resolution=1024"]),
    (["model_b.modes=4"], ["model_b.name=deeponet does not take model_b.modes"]),
    (["pde.loss=rel_l2", "pde.granularity=point"], ["pde.granularity=point needs pde.loss=mse"]),
])
def test_what_does_not_fit_the_problem_is_one_line(overrides, words):
    with pytest.raises(ConfigError) as exc:
        resolve_config(Config, "operator_quick", overrides)
    msg = str(exc.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_classification_rejects_operator_parts():
    for over, word in ((["model_b.name=fno", "model_b.width=null", "model_b.depth=null"], "operator model"),
                       (["condition=resolution_shift"], "needs problem=operator"),
                       (["data.dataset=burgers"], "operator dataset")):
        with pytest.raises(ConfigError, match=word):
            resolve_config(Config, "quick", over)


# ---------------------------------------------------------------------------------- models
def test_fno_is_neuraloperators_and_evaluates_on_any_grid():
    import neuralop.models

    from projects.mutual.models import build_operator

    for dim, size in ((1, 32), (2, 9)):
        model = build_operator("fno", dim, size, width=8, depth=2, modes=4)
        assert isinstance(model.net, neuralop.models.FNO)
        assert any(p.is_complex() for p in model.parameters())  # the library's spectral weights
        for s in (size, 2 * size):
            assert model(torch.randn(2, *([s] * dim))).shape == (2, *([s] * dim))
    assert build_operator("tfno", 1, 32, width=8, depth=2, modes=4).net.fno_blocks.convs[0].factorization


@pytest.mark.parametrize("dim, size, fine", [(1, 16, 32), (2, 9, 17)])
def test_deeponet_interpolates_inputs_to_its_sensors(dim, size, fine):
    """On a grid that contains the sensors, interpolation picks the sensor values exactly, and
    the trunk is queried on the input's own grid: subsampling before or after agrees."""
    from projects.mutual.models import build_operator

    torch.manual_seed(0)
    model = build_operator("deeponet", dim, size, width=16, depth=2, basis=8)
    x = torch.randn(3, *([fine] * dim))
    sub = (slice(None),) + (slice(None, None, 2),) * dim
    out_fine, out_coarse = model(x), model(x[sub])
    assert out_fine.shape == x.shape and out_coarse.shape == x[sub].shape
    assert torch.allclose(out_fine[sub], out_coarse, atol=1e-5)
    assert model.branch[0].in_features == size ** dim


def test_deeponet_resample_is_exact_on_linear_fields():
    from projects.mutual.models.operator.deeponet import resample

    x = torch.linspace(0, 1, 17)
    plane = (x[:, None] + 2 * x[None, :]).unsqueeze(0)
    y = torch.linspace(0, 1, 33)
    assert torch.allclose(resample(plane, 33)[0], y[:, None] + 2 * y[None, :], atol=1e-6)
    wave = torch.sin(2 * torch.pi * torch.arange(64) / 64).unsqueeze(0)
    assert torch.allclose(resample(wave, 32), wave[:, ::2], atol=1e-6)


# ---------------------------------------------------------------------------------- task
def _task(tmp_path, *over):
    from projects.mutual.tasks import get_task

    cfg = resolve_config(Config, "operator_quick", [f"pde.cache_dir={tmp_path}", "pde.n_train=16", "pde.n_val=8",
                                                    "pde.n_test=8", *over])
    task = get_task("operator")(cfg)
    return task, task.load_data()


def test_task_losses_divergence_and_metrics(tmp_path):
    task, data = _task(tmp_path)
    assert task.headline == "rel_l2" and task.headline_direction == "min"
    y = data.test.y
    zero_field = torch.full_like(y, -task.scale["y_mean"] / task.scale["y_std"])  # physical u = 0
    assert torch.allclose(task.metrics(y, y)["rel_l2"], torch.zeros(len(y)), atol=1e-6)
    assert torch.allclose(task.metrics(zero_field, y)["rel_l2"], torch.ones(len(y)), atol=1e-5)
    assert task.per_sample_loss(y + 1, y).shape == (len(y),) and task.divergence(y, y + 2).mean() == 4
    point, _ = _task(tmp_path, "pde.granularity=point")
    assert point.per_sample_loss(y + 1, y).shape == y.shape == point.divergence(y, y).shape
    rel, _ = _task(tmp_path, "pde.loss=rel_l2")
    assert torch.allclose(rel.per_sample_loss(zero_field, y), torch.ones(len(y)), atol=1e-5)


def test_ssmo_hard_masks_per_grid_point_in_a_joint_step(tmp_path):
    from projects.mutual.joint import joint_step, make_optimizer
    from projects.mutual.methods import build_method

    task, data = _task(tmp_path, "pde.granularity=point", "method.name=ssmo-hard")
    a, b = task.build_models(data)
    before = [p.detach().clone() for p in a.parameters()]
    result = joint_step(task, build_method(task.cfg.method), a, b, make_optimizer(a, task.cfg.train),
                        make_optimizer(b, task.cfg.train), (data.train.x, data.train.y))
    m = result.metrics()
    assert result.losses.a.weight.shape == data.train.y.shape
    assert 0 < m["diag.a.mask_ratio"] < 1 and abs(m["diag.a.mask_ratio"] + m["diag.b.mask_ratio"] - 1) < 1e-6
    assert any(not torch.equal(p0, p) for p0, p in zip(before, a.parameters()))


# ---------------------------------------------------------------------------------- runs
def _summary(store, run_id):
    path = store.download_artifacts(run_id, "summary.json", str(store.root / f"s-{run_id[:6]}"))
    return json.loads(open(path).read())


def test_a_run_records_rel_l2_both_models_and_the_cache_key(store, tmp_path):
    from projects.mutual.tasks import get_task
    from projects.mutual.train import main

    main(_tiny(tmp_path / "cache", "condition=resolution_shift", "method.name=ssmo-soft"))
    (run,) = all_runs(store)
    tags, metrics = run.data.tags, run.data.metrics
    assert run.info.status == "FINISHED" and tags["mutual.problem"] == "operator"
    assert tags["mutual.dataset"] == "burgers" and tags["labrun.condition"] == "resolution_shift"
    assert (tags["mutual.model_a"], tags["mutual.model_b"]) == ("fno", "deeponet")
    for m in ("a", "b"):
        for split in ("train", "val", "test", "test_clean"):
            assert metrics[f"metric.{m}.rel_l2.{split}"] > 0 and f"metric.{m}.mse.{split}" in metrics
        assert f"dynamics.{m}.conflict_rate" in metrics
    s = _summary(store, run.info.run_id)
    data = s["results"]["data"]
    assert data["resolution"] == 64 and data["resolutions"]["test"] == [128] and data["cache_hit"] is False
    assert set(data["cache"]) == {"train", "val", "test", "test_clean"}
    assert all(key.startswith("burgers-") for key in data["cache"].values())
    hist = store.get_metric_history(run.info.run_id, "metric.a.rel_l2.val")
    assert s["results"]["per_model"]["a"]["best.rel_l2.val"] == pytest.approx(min(h.value for h in hist))
    cfg = resolve_config(Config, "operator_quick", [a for a in _tiny(tmp_path / "cache", "condition=resolution_shift")
                                                    if a not in ("--config", "operator_quick", "--set")])
    assert get_task("operator")(cfg).load_data().info["cache_hit"] is True  # the next run reuses the sets


def test_darcy_weak_peer_run_and_the_export_schema(store, tmp_path):
    from analysis.export import export
    from projects.mutual.train import main

    main(_tiny(tmp_path / "cache", "data.dataset=darcy", "pde.resolution=17", "pde.shift_resolution=9",
               "condition=weak_peer", "train.epochs=2", "train.weak_peer_epochs_fraction=0.5") +
         ["--experiment", "mutual_operator"])
    (run,) = all_runs(store, ["mutual_operator"])
    b_updates = [h.value for h in store.get_metric_history(run.info.run_id, "diag.b.updated")]
    assert b_updates == [1.0, 0.0]
    (path,) = export(["mutual_operator"], tmp_path / "out", schema=REPO / "projects/mutual/export_operator.yaml")
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == 1 and rows[0]["dataset"] == "darcy" and rows[0]["condition"] == "weak_peer"
    assert 0 < float(rows[0]["model1_final_test_rel_l2"]) and float(rows[0]["model2_best_val_rel_l2"]) > 0


def test_a_condition_that_does_not_fit_exits_2_with_no_run(store):
    proc = run_cli([PYTHON, "-m", "projects.mutual.train", "--config", "operator_quick", "--set",
                    "condition=corrupt_contrast_3"], cwd=store.root, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "does not fit problem=operator" in lines[0], proc.stderr
    assert all_runs(store) == []


# ---------------------------------------------------------------------------------- sweeps
OLD_MUTUAL_ALL = """
entry: mutual
config: quick
zip:
  - {problem: [classification, classification],
     model_a.name: [mlp, cnn], model_a.width: [64, 8], model_a.depth: [1, 2],
     model_b.name: [cnn, resnet18], model_b.width: [8, null], model_b.depth: [2, null]}
matrix:
  method.name: [independent, naive, ssmo-hard, ssmo-soft]
conditions: {clean: {}, noise40: {}, weak_peer: {}}
seeds: [0, 1]
"""


def test_mutual_all_keeps_the_classification_cells_and_adds_operator_rows(tmp_path):
    from sweeps.matrix import expand
    from sweeps.spec import SweepSpec, load_spec

    old_path = tmp_path / "old.yaml"
    old_path.write_text(OLD_MUTUAL_ALL)
    new = expand(load_spec(SweepSpec, REPO / "sweeps/specs/mutual_all.yaml")[0], Config)
    old = expand(load_spec(SweepSpec, old_path)[0], Config)
    new_cls = {c.fingerprint for c in new if c.config.problem == "classification"}
    assert new_cls == {c.fingerprint for c in old} and len(new_cls) == 48
    ops = [c for c in new if c.config.problem == "operator"]
    rows = {(c.config.data.dataset, c.config.model_a.name, c.config.model_b.name, c.condition) for c in ops}
    assert rows == {("burgers", "fno", "deeponet", k) for k in ("clean", "resolution_shift", "viscosity_shift",
                                                                "weak_peer")} | {
        ("darcy", "fno", "deeponet", k) for k in ("clean", "resolution_shift", "coefficient_shift", "weak_peer")} | {
        ("navier_stokes", "fno", "deeponet", k) for k in ("clean", "resolution_shift", "viscosity_shift")} | {
        ("navier_stokes", "fno", "gnot", k) for k in ("clean", "resolution_shift")} | {
        ("navier_stokes", "deeponet", "gnot", "clean"), ("burgers", "fno", "gnot", "clean"),
        ("darcy", "deeponet", "gnot", "clean")}
    assert len(ops) == 16 * 4 * 2 and {c.config.method.name for c in ops} == {
        "independent", "naive", "ssmo-hard", "ssmo-soft"}
    study = expand(load_spec(SweepSpec, REPO / "sweeps/specs/mutual_operator.yaml")[0], Config)
    assert len(study) == 96 and {c.config.pde.n_train for c in study} == {1000}
