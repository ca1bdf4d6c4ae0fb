"""Time series in the mutual-learning layer: the synthetic generator's promises (period, trend,
regime changes), the loader's (standardisation on the training part only, the split layout, the
conditions: temporal shift, missing inputs and their imputation, horizon change), the offline
statsmodels series and the CSV layout's one-line errors, the forecasters, the task's losses and
the config's fit checks."""
from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from projects.mutual.config import Config
from projects.mutual.data import DataError
from projects.mutual.data.series.loader import impute, layout, load_series, missing_mask
from projects.mutual.data.series.synthetic import generate
from tracking import ConfigError, resolve_config

BASE = dict(length=2400, channels=2, period=24, trend=0.0, noise=0.0, ar=0.0, change_points=[],
            regime_level=0.0, regime_scale=1.0)


def _series(**over):
    return generate(np.random.default_rng(0), **{**BASE, **over})


def _cfg(*over: str, config: str = "timeseries_quick") -> Config:
    tiny = ["series.synthetic.length=600", "series.lookback=48", "series.horizon=12", "series.test_horizon=24"]
    return resolve_config(Config, config, [*tiny, *over])


def _load(cfg: Config):
    return load_series(cfg.data.dataset, cfg.series, cfg.perturbation, path=cfg.data.path,
                       split_seed=cfg.data.split_seed)


# ---------------------------------------------------------------------------------- generator
@pytest.mark.parametrize("period", [24, 17])
def test_synthetic_series_has_the_stated_period(period):
    """The strongest frequency of every channel is 1 / period, with trend, noise and regimes on
    (detrended within the first regime), and the series repeats after one period when they are off."""
    out = _series(period=period, trend=2.0, noise=0.2, ar=0.5, change_points=[0.6], regime_level=1.0)
    n = (out.change_steps[0] // period) * period
    head = out.values[:n]
    t = np.arange(n)
    for c in range(head.shape[1]):
        resid = head[:, c] - np.polyval(np.polyfit(t, head[:, c], 1), t)
        power = np.abs(np.fft.rfft(resid)) ** 2
        assert int(np.argmax(power[1:]) + 1) == n // period
    clean = _series(period=period).values
    assert np.allclose(clean[period:], clean[:-period], atol=1e-9)
    assert not np.allclose(clean[period // 2:], clean[:-(period // 2)], atol=1e-3)


def test_synthetic_trend_rises_by_the_stated_amount():
    out = _series(trend=3.0)
    v, p = out.values, 24
    season_means = v[: len(v) // p * p].reshape(-1, p, v.shape[1]).mean(1)  # the season averages out
    slope = np.polyfit(np.arange(len(season_means)) * p, season_means, 1)[0]
    assert np.allclose(slope * len(v), 3.0, rtol=1e-6)


def test_synthetic_regimes_change_level_and_amplitude_at_the_change_points():
    out = _series(change_points=[0.3, 0.7], regime_level=2.0, regime_scale=1.5)
    assert out.change_steps == [720, 1680]
    v, p = out.values, 24
    parts = [v[:720], v[720:1680], v[1680:]]
    means = [x[: len(x) // p * p].mean(0) for x in parts]
    stds = [x[: len(x) // p * p].std(0) for x in parts]
    for k in (1, 2):
        assert np.allclose(np.abs(means[k] - means[k - 1]), 2.0, atol=1e-6)
        assert np.allclose(stds[k] / stds[k - 1], 1.5, rtol=1e-6)
    within = np.abs(np.diff(v[:720], axis=0)).max()
    assert np.abs(v[720] - v[719]).min() > within  # the jump is larger than any step inside a regime


def test_synthetic_noise_is_ar1_with_the_stated_std():
    out = _series(length=20000, noise=0.3, ar=0.6)
    e = out.values - _series(length=20000).values
    assert abs(e.std() - 0.3) < 0.02 and abs(np.corrcoef(e[1:, 0], e[:-1, 0])[0, 1] - 0.6) < 0.03


def test_the_generator_is_fixed_by_the_split_seed_not_the_run_seed():
    a, b = _load(_cfg("seed=1")), _load(_cfg("seed=2"))
    assert torch.equal(a.train.x, b.train.x)
    c = _load(_cfg("data.split_seed=5"))
    assert not torch.equal(a.train.x, c.train.x)


# ---------------------------------------------------------------------------------- loader
def _write_csv(path, values, columns=("date", "a", "b", "OT")):
    import pandas as pd

    frame = pd.DataFrame(values, columns=list(columns[1:]))
    frame.insert(0, columns[0], pd.date_range("2020-01-01", periods=len(values), freq="h").astype(str))
    frame.to_csv(path, index=False)


def test_standardisation_uses_the_training_part_only(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(600, 3)) * [1.0, 5.0, 2.0] + [0.0, 10.0, -3.0]
    _write_csv(tmp_path / "a.csv", values)
    later = values.copy()
    later[300:] = later[300:] * 7 + 100  # everything after the training part changes
    _write_csv(tmp_path / "b.csv", later)
    a = _load(_cfg("data.dataset=csv", f"data.path={tmp_path / 'a.csv'}"))
    b = _load(_cfg("data.dataset=csv", f"data.path={tmp_path / 'b.csv'}"))
    tr = values[:300]
    assert a.scale == b.scale and np.allclose(a.scale["mean"], tr.mean(0)) and np.allclose(a.scale["std"], tr.std(0))
    assert torch.equal(a.train.x, b.train.x) and not torch.equal(a.test.y, b.test.y)
    assert a.info["targets"] == ["a", "b", "OT"] and a.input_shape == (48, 3)
    ms = _load(_cfg("data.dataset=csv", f"data.path={tmp_path / 'a.csv'}", "series.features=MS"))
    assert ms.info["targets"] == ["OT"] and ms.outputs == (2,) and ms.train.y.shape[2] == 1


def test_layout_windows_and_the_temporal_shift():
    """Targets stay inside their part; train inputs never leave the training part; under
    temporal_shift only the test moves (to the far end, after the gap)."""
    clean, shifted = _load(_cfg()), _load(_cfg("condition=temporal_shift"))
    parts = layout(600, _cfg().series)
    assert parts == {"train": (0, 300), "val": (300, 360), "near": (360, 450), "far": (510, 600)}
    assert shifted.info["gap_steps"] == 60 and "test_clean" not in clean.extra
    assert len(clean.train) == len(range(48, 300 - 12 + 1, 2)) and len(clean.val) == 60 - 12 + 1
    for a, b in ((clean.train, shifted.train), (clean.val, shifted.val), (clean.test, shifted.extra["test_clean"])):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    from projects.mutual.data.series.sources import load_raw

    raw = load_raw("synthetic_series", _cfg().series, split_seed=0).values
    mean, std = (torch.tensor(clean.scale[k]).float() for k in ("mean", "std"))
    z = (torch.from_numpy(raw).float() - mean) / std
    assert torch.allclose(shifted.test.y[0], z[510:522], atol=1e-5)      # first far target
    assert torch.allclose(shifted.test.x[0], z[462:510], atol=1e-5)      # its inputs reach into the gap
    assert torch.allclose(clean.train.x[0], z[0:48], atol=1e-5)
    assert torch.allclose(clean.test.y[-1], z[438:450], atol=1e-5)


def test_missing_masks_drop_the_stated_share():
    rng = np.random.default_rng(0)
    random = missing_mask(rng, (5000, 3), random=0.3, block=0.0, block_length=8)
    assert abs(random.mean() - 0.3) < 0.02
    block = missing_mask(rng, (5000, 3), random=0.0, block=0.2, block_length=8)
    steps = block[:, 0]
    assert np.array_equal(block, np.repeat(steps[:, None], 3, 1)) and steps.sum() == 1000
    edges = np.flatnonzero(np.diff(np.r_[0, steps.astype(int), 0]))
    runs = edges[1::2] - edges[::2]
    assert (runs < 8).sum() <= 1  # blocks (merged where they touch); only the last one may be cut short


def test_imputation_carries_the_last_observation_forward():
    values = np.arange(12, dtype=float).reshape(6, 2) + 1
    mask = np.zeros((6, 2), bool)
    mask[[0, 2, 3], 0] = True
    mask[[4, 5], 1] = True
    out = impute(values, mask)
    assert out[:, 0].tolist() == [0.0, 3.0, 3.0, 3.0, 9.0, 11.0]  # leading gap: 0 (the training mean)
    assert out[:, 1].tolist() == [2.0, 4.0, 6.0, 8.0, 8.0, 8.0]


@pytest.mark.parametrize("condition", ["missing_random20", "missing_block20"])
def test_missing_inputs_touch_the_test_inputs_only(condition):
    clean, gap = _load(_cfg()), _load(_cfg(f"condition={condition}"))
    assert torch.equal(clean.train.x, gap.train.x) and torch.equal(clean.val.x, gap.val.x)
    assert torch.equal(gap.test.y, clean.test.y) and torch.equal(gap.extra["test_clean"].x, clean.test.x)
    changed = (gap.test.x != clean.test.x).float().mean()
    assert 0.1 < changed < 0.3 and abs(gap.info["missing"]["dropped_share"] - 0.2) < 0.02
    everywhere = _load(_cfg(f"condition={condition}", "series.missing_in=all"))
    assert not torch.equal(everywhere.train.x, clean.train.x) and torch.equal(everywhere.train.y, clean.train.y)


def test_horizon_shift_tests_the_longer_horizon():
    data = _load(_cfg("condition=horizon_shift"))
    assert data.test.y.shape[1:] == (24, 3) and data.extra["test_clean"].y.shape[1:] == (12, 3)
    assert data.val.y.shape[1] == 12 and data.describe()["horizons"]["test"] == 24


def test_floors_naive_and_seasonal_naive():
    data = _load(_cfg("series.synthetic.noise=0", "series.synthetic.trend=0", "series.synthetic.change_points=[]"))
    f = data.floors["test"]
    assert f["seasonal_naive"]["mse"] < 1e-10 < f["naive"]["mse"]   # an exactly periodic series
    short = _load(_cfg("series.lookback=12", "series.horizon=6", "series.test_horizon=12"))
    assert "seasonal_naive" not in short.floors["test"]              # lookback < period: no season to repeat


@pytest.mark.parametrize("name, steps, channels", [("co2", 2284, 1), ("sunspots", 309, 1), ("elnino", 732, 1),
                                                   ("macrodata", 203, 12)])
def test_statsmodels_series_load_offline(name, steps, channels, monkeypatch):
    from projects.mutual.data.series.sources import load_raw

    def refuse(*args, **kwargs):
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    raw = load_raw(name, _cfg().series)
    assert raw.values.shape == (steps, channels) and np.isfinite(raw.values).all()


def test_co2_config_runs_its_splits():
    cfg = resolve_config(Config, "timeseries_co2", ["condition=temporal_shift"])
    data = _load(cfg)
    assert data.period == 52 and data.input_shape == (104, 1) and data.info["interpolated_steps"] == 59
    assert data.test.y.mean() > data.train.y.max() - 0.5  # the far test lies above the training range


@pytest.mark.parametrize("over, csv, words", [
    (["data.dataset=csv"], False, ["data.dataset=csv needs data.path", "--set data.path="]),
    (["data.dataset=csv", "data.path=/nowhere/ETTh1.csv"], False, ["data.path=/nowhere/ETTh1.csv is not a file"]),
    (["data.dataset=csv", "series.target=price"], True, ["series.target=price is not a column", "a, b, OT"]),
    (["data.dataset=csv", "series.date_column=when"], True, ["series.date_column=when is not a column", "null"]),
    (["series.lookback=400"], False, ["series too short for train", "lower series.lookback/horizon"]),
])
def test_bad_series_data_is_one_line(over, csv, words, tmp_path):
    if csv:
        _write_csv(tmp_path / "ok.csv", np.random.default_rng(0).normal(size=(600, 3)))
        over = [*over, f"data.path={tmp_path / 'ok.csv'}"]
    with pytest.raises(DataError) as exc:
        _load(_cfg(*over))
    msg = str(exc.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


# ---------------------------------------------------------------------------------- models
@pytest.mark.parametrize("name", ["dlinear", "lstm", "patchtst"])
@pytest.mark.parametrize("channels, outputs", [(3, [0, 1, 2]), (3, [2]), (1, [0])])
def test_forecasters_map_windows_to_horizons(name, channels, outputs):
    from projects.mutual.models import build_forecaster

    for lookback in (96, 20):
        model = build_forecaster(name, lookback, 24, channels, outputs)
        assert model(torch.randn(4, lookback, channels)).shape == (4, 24, len(outputs))


def test_channel_independent_models_read_only_the_forecast_channels():
    from projects.mutual.models import build_forecaster

    torch.manual_seed(0)
    x = torch.randn(2, 48, 3)
    y = x.clone()
    y[:, :, :2] = 0
    for name in ("dlinear", "patchtst"):
        model = build_forecaster(name, 48, 12, 3, [2]).eval()
        assert torch.allclose(model(x), model(y))
    lstm = build_forecaster("lstm", 48, 12, 3, [2])
    assert not torch.allclose(lstm(x), lstm(y))


def test_dlinear_starts_as_the_window_mean_and_decomposes_exactly():
    from projects.mutual.models.series.dlinear import DLinear, moving_average

    x = torch.randn(2, 48, 3)
    assert torch.allclose(DLinear(48, 12, 3, [0, 1, 2])(x), x.mean(1, keepdim=True).expand(-1, 12, -1), atol=1e-5)
    ramp = torch.arange(48.0).view(1, 48, 1)
    assert torch.allclose(moving_average(ramp, 25)[:, 12:36], ramp[:, 12:36])  # a line is its own trend


# ---------------------------------------------------------------------------------- task
def _task(*over):
    from projects.mutual.tasks import get_task

    task = get_task("timeseries")(_cfg(*over))
    return task, task.load_data()


def test_losses_divergence_and_metrics_per_sample_and_per_step():
    task, data = _task()
    assert task.headline == "mse" and task.headline_direction == "min"
    y = data.test.y
    assert task.per_sample_loss(y + 1, y).shape == (len(y),)
    assert torch.allclose(task.divergence(y, y + 2), 4 * torch.ones(len(y)))
    m = task.metrics(y - 0.5, y)
    assert torch.allclose(m["mse"], torch.full((len(y),), 0.25))
    assert torch.allclose(m["mae"], torch.full((len(y),), 0.5))
    step, _ = _task("series.granularity=step")
    assert step.per_sample_loss(y, y).shape == (len(y), 12) == step.divergence(y, y).shape


def test_rollout_extends_the_direct_forecast_under_horizon_shift():
    task, data = _task("condition=horizon_shift")
    a, _ = task.build_models(data)
    a.eval()
    x = data.test.x[:5]
    out = task.forward(a, x)
    assert out.shape == (5, 24, 3) and torch.allclose(out[:, :12], a(x))
    assert torch.allclose(out[:, 12:], a(torch.cat([x, a(x)], 1)[:, -48:]))
    assert task.per_sample_loss(out, data.val.y[:5]).shape == (5,)        # scored on the shared steps
    a.train()
    assert task.forward(a, x).shape == (5, 12, 3)                          # training: the direct forecast


def test_ssmo_hard_masks_per_time_step_in_a_joint_step():
    from projects.mutual.joint import joint_step, make_optimizer
    from projects.mutual.methods import build_method

    torch.manual_seed(0)
    task, data = _task("series.granularity=step", "method.name=ssmo-hard", "model_b.name=lstm",
                       "model_b.width=8", "model_b.depth=1")
    a, b = task.build_models(data)
    before = [p.detach().clone() for p in a.parameters()]
    result = joint_step(task, build_method(task.cfg.method), a, b, make_optimizer(a, task.cfg.train),
                        make_optimizer(b, task.cfg.train), (data.train.x[:32], data.train.y[:32]))
    m = result.metrics()
    assert result.losses.a.weight.shape == (32, 12)
    assert 0 < m["diag.a.mask_ratio"] < 1 and abs(m["diag.a.mask_ratio"] + m["diag.b.mask_ratio"] - 1) < 1e-6
    assert any(not torch.equal(p0, p) for p0, p in zip(before, a.parameters()))


# ---------------------------------------------------------------------------------- config
def test_configs_resolve_and_conditions_fill_the_series_knobs():
    for name in ("timeseries_quick", "timeseries_default", "timeseries_co2"):
        cfg = resolve_config(Config, name)
        assert cfg.problem == "timeseries" and cfg.model_a.name == "dlinear"
    cfg = resolve_config(Config, "timeseries_quick", ["condition=temporal_shift+missing_block20+weak_peer"])
    assert cfg.condition == "weak_peer+temporal_shift+missing_block20"
    assert cfg.perturbation.temporal_shift and cfg.perturbation.missing_block == 0.2
    named = resolve_config(Config, "timeseries_quick", ["perturbation.missing_random=0.3"])
    assert named.condition == "missing_random30"
    import yaml

    from projects.mutual.conditions import parse_condition

    for name in ("temporal_shift", "horizon_shift", "missing_random20", "missing_block20"):
        spec = yaml.safe_load(open(f"projects/mutual/configs/conditions/{name}.yaml"))
        knobs = parse_condition(spec["condition"]).knobs()
        assert spec["condition"] == name and all(knobs[k] == v for k, v in spec["perturbation"].items())
    clean = resolve_config(Config, "quick")  # classification knobs read as before
    assert set(clean.perturbation.knobs()) == {"label_noise", "weak_peer", "corruption", "severity"}


@pytest.mark.parametrize("overrides, words", [
    (["model_a.name=mlp"], ["model_a.name=mlp is a classification model",
                            "valid for timeseries: dlinear, lstm, patchtst"]),
    (["data.dataset=digits"], ["data.dataset=digits is a classification dataset", "synthetic_series"]),
    (["condition=noise40"], ["condition=noise40 does not fit problem=timeseries", "temporal_shift",
                             "missing_<random|block><NN>"]),
    (["perturbation.missing_random=0.255"], ["whole percent"]),
    (["condition=horizon_shift", "series.features=MS"], ["horizon_shift needs series.features=M or S"]),
    (["condition=horizon_shift", "series.test_horizon=24"], ["series.test_horizon > series.horizon"]),
    (["series.train_fraction=0.8"], ["must both fit"]),
    (["model_a.width=8"], ["model_a.name=dlinear does not take model_a.width"]),
    (["series.synthetic.change_points=[0.9,0.2]"], ["increasing fractions"]),
])
def test_what_does_not_fit_is_one_line(overrides, words):
    with pytest.raises(ConfigError) as exc:
        resolve_config(Config, "timeseries_quick", overrides)
    msg = str(exc.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_other_problems_reject_the_series_conditions():
    for config, over in (("quick", "condition=temporal_shift"), ("operator_quick", "condition=missing_block20")):
        with pytest.raises(ConfigError, match="needs problem=timeseries"):
            resolve_config(Config, config, [over])
