"""The model factory builds every model type offline; Dinomaly is disabled without weights."""
from __future__ import annotations

import random
import socket

import numpy as np
import pytest

pytest.importorskip("anomalib")

from projects.anomaly.config import Config
from projects.anomaly.data.mvtec import GenerateSpec, generate
from projects.anomaly.factory import SPECS, BuildContext, build_model, spec_for
from projects.anomaly.validation import DinomalyValidationLoss, DraemValidationLoss
from tests.helpers import PYTHON, REPO, run_cli
from tracking import resolve_config


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test: nothing may be downloaded."""
    def refuse(self, *args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = generate(tmp_path_factory.mktemp("tex"), GenerateSpec(domains=("A",), size=32, n_train=2,
                                                                 n_test_good=1, n_per_defect=1))
    return root / "anomaly_sources"


def _cfg(*sets):
    return resolve_config(Config, "quick", list(sets))


@pytest.mark.parametrize("model_type, cls, memory_bank", [
    ("patchcore", "Patchcore", True), ("padim", "Padim", True),
    ("fastflow", "LabrunFastflow", False), ("draem", "LabrunDraem", False)])
def test_factory_builds_every_model_offline(no_network, sources, model_type, cls, memory_bank):
    cfg = _cfg(f"model.model_type={model_type}", "model.draem.base_width=8", "model.draem.disc_base_width=8",
               "train.learning_rate=0.005")
    model = build_model(cfg, BuildContext(64, cfg.train.learning_rate, sources))
    assert type(model).__name__ == cls
    assert spec_for(cfg).memory_bank is memory_bank
    assert (spec_for(cfg).validation_loss() is None) is memory_bank
    if not memory_bank:  # the configured learning rate, not anomalib's fixed one
        opt = model.configure_optimizers()
        opt = opt[0][0] if isinstance(opt, tuple) else opt
        assert opt.param_groups[0]["lr"] == 0.005


def test_draem_never_falls_back_to_downloading_dtd(no_network, tmp_path):
    cfg = _cfg("model.model_type=draem", f"model.draem.dtd_dir={tmp_path / 'missing'}")
    with pytest.raises(ValueError, match="is not a folder of images"):
        build_model(cfg, BuildContext(64, None, None))


def test_dinomaly_without_weights_is_disabled_with_how_to_enable(no_network):
    cfg = _cfg("model.model_type=dinomaly")
    reason, enable = spec_for(cfg).unavailable(cfg.model.params())
    assert "pretrained DINOv2" in reason and "no local weights file" in reason
    assert "model.dinomaly.weights=" in enable
    with pytest.raises(ValueError, match="dinomaly is unavailable"):
        build_model(cfg, BuildContext(56, None, None))


def test_dinomaly_builds_from_a_local_weights_file(no_network, tmp_path):
    import timm
    import torch

    encoder = timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, dynamic_img_size=True)
    with torch.no_grad():
        encoder.cls_token.fill_(0.125)
    path = tmp_path / "dinov2_s.pth"
    torch.save(encoder.state_dict(), path)
    cfg = _cfg("model.model_type=dinomaly", f"model.dinomaly.weights={path}", "model.dinomaly.decoder_depth=2")
    assert spec_for(cfg).unavailable(cfg.model.params()) is None
    model = build_model(cfg, BuildContext(56, None, None))
    assert torch.all(model.model.encoder.feature_extractor.cls_token == 0.125)


def test_backbone_weights_come_from_a_local_file(tmp_path, no_network):
    import timm
    import torch

    state = timm.create_model("resnet18", pretrained=False).state_dict()
    state["conv1.weight"] = torch.full_like(state["conv1.weight"], 0.5)
    torch.save(state, tmp_path / "r18.pth")
    cfg = _cfg(f"model.patchcore.weights={tmp_path / 'r18.pth'}")
    model = build_model(cfg, BuildContext(64, None, None))
    assert torch.all(model.model.feature_extractor.feature_extractor.conv1.weight == 0.5)
    torch.save({"nothing": torch.zeros(2)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="fits 0 of"):
        build_model(_cfg(f"model.patchcore.weights={tmp_path / 'wrong.pth'}"), BuildContext(64, None, None))


def test_every_model_type_has_a_spec_and_a_config_section():
    assert set(SPECS) == {"patchcore", "padim", "fastflow", "draem", "dinomaly"}
    assert all(hasattr(Config().model, name) for name in SPECS)


def test_draem_validation_loss_is_repeatable_and_leaves_the_rng_alone(sources):
    import torch

    cfg = _cfg("model.model_type=draem", "model.draem.base_width=8", "model.draem.disc_base_width=8")
    model = build_model(cfg, BuildContext(32, None, sources)).eval()
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(5), random.seed(5), np.random.seed(5)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    with torch.no_grad():
        a = DraemValidationLoss().batch_loss(model, images, 0)
        b = DraemValidationLoss().batch_loss(model, images, 0)
    assert torch.isfinite(a) and float(a) > 0 and float(a) == float(b)
    assert torch.equal(torch.get_rng_state(), before[0]) and random.getstate() == before[1]
    assert np.array_equal(np.random.get_state()[1], before[2])
    assert not model.model.training and not model.model.reconstructive_subnetwork.training


@pytest.mark.parametrize("arg, message", [
    ("model.model_type=vae", "model.model_type expects one of 'patchcore' | 'padim' | 'fastflow' | 'draem' | 'dinomaly'"),
    ("model.patchcore.coreset_ratio=0.1", "unknown config key 'model.patchcore.coreset_ratio'"),
])
def test_unknown_model_or_parameter_exits_2_naming_the_valid_ones(store, arg, message):
    proc = run_cli([PYTHON, "-m", "projects.anomaly.train", "--config", "quick", "--set", arg], cwd=store.root,
                   env_extra={"MLFLOW_TRACKING_URI": store.uri})
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    if "coreset" in arg:
        assert "model.patchcore.coreset_sampling_ratio" in proc.stderr
    assert not store.search_experiments(filter_string="name = 'anomaly'")


@pytest.mark.slow
def test_dinomaly_with_a_random_init_encoder_trains_offline(no_network, tmp_path):
    """encoder_init=random: the DINOv2 architecture with random weights, no file, no download;
    Dinomaly's own loss and optimizer (StableAdamW, warm-cosine schedule) change the decoder and
    leave the frozen encoder as it was. Two steps: the warm-up starts at lr 0, so the first
    step moves nothing."""
    import lightning.pytorch as pl
    import torch

    from projects.anomaly.datamodule import folder, plan

    cfg = _cfg("model.model_type=dinomaly", "model.dinomaly.encoder_init=random",
               "data.image_size=56", f"data.cache_dir={tmp_path}", "data.generated.n_train=5")
    assert spec_for(cfg).unavailable(cfg.model.params()) is None and spec_for(cfg).config_error(cfg) is None
    model = build_model(cfg, BuildContext(56, None, None, aupro=False))
    encoder = {k: v.clone() for k, v in model.model.encoder.state_dict().items()}
    decoder = {k: v.clone() for k, v in model.model.decoder.state_dict().items()}
    trainer = pl.Trainer(max_steps=2, max_epochs=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         **{k: v for k, v in model.trainer_arguments.items() if k == "gradient_clip_val"})
    trainer.fit(model, datamodule=folder(plan(cfg).source, cfg))
    assert trainer.global_step == 2
    assert all(torch.equal(v, model.model.encoder.state_dict()[k]) for k, v in encoder.items())
    assert any(not torch.equal(v, model.model.decoder.state_dict()[k]) for k, v in decoder.items())
    with torch.no_grad():  # as the validation callback calls it (the loss hooks a gradient)
        val = DinomalyValidationLoss().batch_loss(model, torch.rand(2, 3, 56, 56), 0)
    assert torch.isfinite(val) and float(val) > 0


def test_dinomaly_random_encoder_and_a_weights_file_exclude_each_other():
    cfg = _cfg("model.model_type=dinomaly", "model.dinomaly.encoder_init=random", "model.dinomaly.weights=x.pth",
               "data.image_size=56")
    assert "encoder_init is random" in spec_for(cfg).config_error(cfg)
