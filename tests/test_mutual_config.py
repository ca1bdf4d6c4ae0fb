"""The mutual config schema: shipped configs, the condition <-> perturbation link, errors."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from projects.mutual.conditions import common_conditions
from projects.mutual.config import Config
from tracking import ConfigError, load_config, resolve_config

REPO = Path(__file__).resolve().parent.parent


def test_shipped_configs_resolve():
    default, quick = resolve_config(Config, "default"), resolve_config(Config, "quick")
    assert default.method_tag == "ssmo-hard" and default.condition == "clean"
    assert (default.model_a.name, default.model_b.name) == ("mlp", "cnn")
    assert quick.train.epochs < default.train.epochs
    for name in common_conditions():
        cfg = resolve_config(Config, f"conditions/{name}")
        assert cfg.condition == name


@pytest.mark.parametrize("overrides, condition, knobs", [
    (["condition=noise20"], "noise20", {"label_noise": 0.2}),
    (["perturbation.label_noise=0.4", "perturbation.weak_peer=true"], "noise40+weak_peer",
     {"label_noise": 0.4, "weak_peer": True}),
    (["condition=weak_peer+noise40"], "noise40+weak_peer", {"label_noise": 0.4, "weak_peer": True}),
    (["condition=corrupt_gaussian_noise_3"], "corrupt_gaussian_noise_3",
     {"corruption": "gaussian_noise", "severity": 3}),
    (["perturbation.corruption=contrast", "perturbation.severity=5"], "corrupt_contrast_5",
     {"corruption": "contrast", "severity": 5}),
    ([], "clean", {}),
])
def test_condition_and_perturbation_fill_each_other(overrides, condition, knobs):
    cfg = resolve_config(Config, "quick", overrides)
    assert cfg.condition == condition
    want = {"label_noise": 0.0, "weak_peer": False, "corruption": "none", "severity": 0, **knobs}
    assert cfg.perturbation.knobs() == want
    assert resolve_config(Config, None, [], base=cfg.model_dump(mode="json")) == cfg  # resume round trip


def test_condition_file_combines_with_set():
    cfg = resolve_config(Config, "conditions/noise40", ["method.name=naive", "train.epochs=2"])
    assert (cfg.condition, cfg.perturbation.label_noise, cfg.method_tag) == ("noise40", 0.4, "naive")


@pytest.mark.parametrize("overrides, words", [
    (["method.name=dml"], ["method.name", "unknown method 'dml'", "independent", "ssmo-soft"]),
    (["model_b.name=vgg"], ["model_b.name", "unknown model 'vgg'", "resnet18"]),
    (["condition=noisy"], ["unknown condition 'noisy'", "noise<NN>", "weak_peer", "corrupt_"]),
    (["condition=clean", "perturbation.label_noise=0.2"], ["perturbation.label_noise=0.2", "contradicts"]),
    (["perturbation.label_noise=0.123"], ["whole percent"]),
    (["perturbation.corruption=blur"], ["perturbation.corruption", "gaussian_blur"]),
    (["model_b.name=resnet18"], ["model_b.name=resnet18 does not take model_b.depth, model_b.width",
                                 "--set model_b.width=null"]),
    (["condition=weak_peer", "model_b.name=resnet18", "model_b.width=null", "model_b.depth=null",
      "train.weak_peer_width_factor=0.5"],
     ["weak_peer_width_factor", "resnet18"]),
    (["problem=detection"], ["unknown problem", "classification"]),
    (["data.dataset=svhn"], ["data.dataset", "digits", "mnist5k"]),
    (["method.lam=-1"], ["method.lam", "greater than or equal to 0"]),
])
def test_bad_values_are_one_line_naming_what_is_valid(overrides, words):
    with pytest.raises(ConfigError) as exc:
        resolve_config(Config, "quick", overrides)
    msg = str(exc.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_sizes_can_be_unset_for_a_fixed_size_model():
    cfg = resolve_config(Config, "quick", ["model_b.name=resnet18", "model_b.width=null", "model_b.depth=null"])
    assert cfg.model_b.name == "resnet18" and cfg.model_b.sizes() == {}


def test_weak_peer_sizes_and_epochs():
    cfg = resolve_config(Config, "quick", ["condition=weak_peer", "train.weak_peer_width_factor=0.5",
                                           "train.weak_peer_epochs_fraction=0.34", "train.epochs=3"])
    assert cfg.model_b_sizes()["width"] == 4 and cfg.model_b_epochs() == 1
    clean = resolve_config(Config, "quick", ["train.weak_peer_width_factor=0.5"])
    assert clean.model_b_sizes() == {"width": 8, "depth": 2} and clean.model_b_epochs() == clean.train.epochs


def test_help_lists_the_keys(capsys):
    with pytest.raises(SystemExit):
        load_config(Config, ["--help"])
    out = capsys.readouterr().out
    assert "method.lam" in out and "perturbation.label_noise" in out and "train.probe_size" in out


def test_config_module_does_not_import_torch():
    code = "import sys, projects.mutual.config; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)
