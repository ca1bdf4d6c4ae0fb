"""The ired config schema: shipped configs resolve, method tags, and clear validation errors."""
from __future__ import annotations

import pytest

from tracking import ConfigError, load_config, resolve_config

from projects.ired.config import Config


def test_shipped_configs_resolve_to_their_scales():
    quick, default, paper = (resolve_config(Config, name) for name in ("quick", "default", "paper"))
    assert paper.train.batch_size == 2048 and paper.data.n == 20 and paper.train.steps >= 100_000
    assert default.data.n == 20 and default.model.hidden == 512 and default.diffusion.timesteps == 10
    assert quick.data.n < default.data.n and quick.train.steps < 1000
    assert (default.mining.energy_weight, default.mining.negative_noise) == (0.5, 3.0)


def test_method_tag_is_the_strategy_or_feedforward():
    assert resolve_config(Config, "quick", ["mining.strategy=mixed"]).method_tag == "mixed"
    ff = resolve_config(Config, "quick", ["model.kind=feedforward", "mining.strategy=adversarial"])
    assert ff.method_tag == "feedforward"


@pytest.mark.parametrize("override, words", [
    ("mining.strategy=hardest", ["mining.strategy", "'adversarial'", "'mixed'", "hardest"]),
    ("mining.opt_steps=-2", ["mining.opt_steps", "greater than or equal to 0"]),
    ("mining.adversarial_fraction=-0.5", ["mining.adversarial_fraction", "greater than or equal to 0"]),
    ("train.batch_size=0", ["train.batch_size", "greater than 0"]),
    ("mining.stratgy=random", ["unknown config key", "mining.strategy"]),
])
def test_bad_values_name_the_key_and_what_is_valid(override, words):
    with pytest.raises(ConfigError) as exc:
        resolve_config(Config, "quick", [override])
    msg = str(exc.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_help_lists_the_task_keys(capsys):
    with pytest.raises(SystemExit) as exc:
        load_config(Config, ["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "mining.adversarial_fraction" in out and "model.kind" in out
