"""Configs: YAML + dotted overrides, validated before any run exists."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from projects.toy.train import Config
from tests.helpers import PYTHON, REPO, run_cli
from tracking.config import (ConfigError, fingerprint, group_key, load_config, parse_argv,
                             resolve_config)


def test_yaml_and_overrides_resolve_with_types():
    cfg = resolve_config(Config, "quick", ["train.lr=1e-3", "train.steps=7", "model.activation=tanh",
                                           "diagnostics.residuals=true", "train.fail_at_step=null"])
    assert cfg.train.lr == pytest.approx(0.001) and isinstance(cfg.train.lr, float)
    assert cfg.train.steps == 7 and isinstance(cfg.train.steps, int)
    assert cfg.model.activation == "tanh"
    assert cfg.diagnostics.residuals is True
    assert cfg.train.fail_at_step is None
    assert cfg.train.eval_every == 10  # from quick.yaml
    assert cfg.data.n_features == 8  # schema default


def test_unknown_key_names_closest_valid_keys():
    with pytest.raises(ConfigError) as err:
        resolve_config(Config, None, ["train.lrr=0.1"])
    msg = str(err.value)
    assert "unknown config key 'train.lrr'" in msg and "train.lr" in msg
    assert "\n" not in msg


def test_unknown_key_in_yaml_is_reported(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {stepz: 3}\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'train.stepz'.*train.steps"):
        resolve_config(Config, path)


def test_wrong_type_names_field_type_and_text():
    with pytest.raises(ConfigError) as err:
        resolve_config(Config, None, ["train.steps=many"])
    msg = str(err.value)
    assert "train.steps expects int" in msg and "'many'" in msg and "train.steps=many" in msg


def test_literal_field_lists_the_valid_choices():
    with pytest.raises(ConfigError, match=r"train.optimizer expects one of 'adam' \| 'sgd'"):
        resolve_config(Config, None, ["train.optimizer=lbfgs"])


@pytest.mark.parametrize("item", ["train.lr", "=3", "train..lr=3"])
def test_malformed_override_shows_the_syntax(item):
    with pytest.raises(ConfigError, match=r"malformed override .*--set train.lr=0.001"):
        resolve_config(Config, None, [item])


def test_missing_and_unreadable_config_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        resolve_config(Config, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {steps: 3\nmodel: [\n")
    with pytest.raises(ConfigError, match=r"cannot parse YAML config .* line \d+"):
        resolve_config(Config, bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        resolve_config(Config, scalar)


def test_argv_accepts_mlflow_style_and_options():
    opts, overrides, want_help = parse_argv(
        ["--config", "quick", "--train.lr", "0.5", "--seed", "4", "--set", "model.hidden=8",
         "--tag", "idea=wide", "--status", "keep", "--name", "n1", "--description", "d"])
    assert not want_help
    assert overrides == ["train.lr=0.5", "seed=4", "model.hidden=8"]
    assert opts.base_config == "quick" and opts.tags == {"idea": "wide"}
    assert (opts.status, opts.name, opts.description) == ("keep", "n1", "d")
    cfg = load_config(Config, ["--config", "quick", "--train.lr", "0.5", "--seed", "4"])
    assert cfg.seed == 4 and cfg.train.lr == 0.5
    assert cfg.launch.base_config.endswith("configs/quick.yaml")
    assert cfg.launch.overrides == ["train.lr=0.5", "seed=4"]


def test_bad_status_and_tag_are_errors():
    with pytest.raises(ConfigError, match="unknown status 'great'; valid: exploratory, keep"):
        parse_argv(["--status", "great"])
    with pytest.raises(ConfigError, match="expected --tag key=value"):
        parse_argv(["--tag", "novalue"])
    with pytest.raises(ConfigError, match="unexpected argument 'stray'"):
        parse_argv(["stray"])


def test_fingerprint_tracks_config_and_group_ignores_seed():
    a = resolve_config(Config, None, ["seed=1"])
    b = resolve_config(Config, None, ["seed=2"])
    c = resolve_config(Config, None, ["seed=1", "train.lr=0.02"])
    assert fingerprint(a) == fingerprint(resolve_config(Config, None, ["seed=1"]))
    assert fingerprint(a) != fingerprint(b) and group_key(a) == group_key(b)
    assert group_key(a) != group_key(c)


def _runs_in(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as con:
        return con.execute("select count(*) from runs").fetchone()[0]


@pytest.mark.parametrize("args, expected", [
    (["--set", "train.lrr=0.1"], "unknown config key 'train.lrr'"),
    (["--set", "train.steps=abc"], "train.steps expects int, got 'abc'"),
    (["--set", "train.lr"], "malformed override 'train.lr'"),
    (["--config", "missing.yaml"], "config file 'missing.yaml' not found"),
    (["--config", "{bad}"], "not found"),
])
def test_bad_input_exits_2_with_one_line_and_no_run(store, tmp_path, args, expected):
    db = Path(store.root) / "mlflow.db"
    before = _runs_in(db)
    proc = run_cli([PYTHON, "-m", "projects.toy.train", *args], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert _runs_in(db) == before


def test_unreadable_yaml_exits_2_and_no_run(store, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  steps: [1,\n")
    proc = run_cli([PYTHON, "-m", "projects.toy.train", "--config", str(bad)], cwd=tmp_path)
    assert proc.returncode == 2
    assert "cannot parse YAML config" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert _runs_in(Path(store.root) / "mlflow.db") == 0


def test_help_lists_config_keys():
    proc = run_cli([PYTHON, "-m", "projects.toy.train", "--help"], cwd=REPO)
    assert proc.returncode == 0
    assert "--set key=value" in proc.stdout and "train.lr" in proc.stdout
