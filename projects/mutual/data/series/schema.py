"""The ``series.*`` config section of ``problem=timeseries`` (torch-free; inert in other problems).

Split layout along time (fractions of the series length T; standardisation uses ``train`` only)::

    | train | val | test (near) |      gap      | far test |
    0      .50   .60          .75             .85        1.0

``clean`` tests on the near part right after validation. ``temporal_shift`` tests on the far
part (the last ``test_fraction`` of the series, after the gap) and keeps the near part as
``test_clean``; training and validation are the same windows in both, so only the test moves.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

from tracking import Section
from tracking.schema import SEED_MAX


class SyntheticConfig(Section):
    """``data.dataset=synthetic_series``: seasonality + trend + AR(1) noise, with regime changes."""

    length: PositiveInt = 4000
    """Time steps T of the generated series."""
    channels: PositiveInt = 3
    """Channels; each has its own amplitude and phase of the same period."""
    period: int = Field(24, ge=2)
    """The seasonal period in steps (a fundamental plus its second harmonic)."""
    trend: float = 2.0
    """Linear rise over the whole series, in units of the base seasonal amplitude (1)."""
    noise: NonNegativeFloat = 0.2
    """Standard deviation of the AR(1) noise."""
    ar: float = Field(0.5, ge=0.0, lt=1.0)
    """AR(1) coefficient of the noise."""
    change_points: list[float] = [0.35, 0.8]
    """Regime changes, as fractions of T in (0, 1): at each, the level jumps by regime_level
    (a channel's sign fixed per channel) and the seasonal amplitude is multiplied by regime_scale."""
    regime_level: float = 1.5
    regime_scale: PositiveFloat = 1.5
    seed: int | None = Field(None, ge=0, le=SEED_MAX)
    """Generator seed (None: data.split_seed); the same for every run seed and condition."""

    @model_validator(mode="after")
    def _points_inside(self) -> "SyntheticConfig":
        bad = [p for p in self.change_points if not 0.0 < p < 1.0]
        if bad or list(self.change_points) != sorted(self.change_points):
            raise ValueError(f"series.synthetic.change_points={self.change_points}: give increasing "
                             f"fractions of the length strictly between 0 and 1 (e.g. [0.35, 0.8])")
        return self


class SeriesConfig(Section):
    """Long-horizon forecasting data (problem=timeseries; inert otherwise)."""

    lookback: PositiveInt = 96
    """Input window L (time steps the models see)."""
    horizon: PositiveInt = 24
    """Forecast horizon H of training, validation and test."""
    test_horizon: PositiveInt = 96
    """horizon_shift: the test horizon, reached by feeding each model's forecasts back as its
    inputs (recursive rollout); test_clean stays at series.horizon."""
    features: Literal["M", "S", "MS"] = "M"
    """M: all channels in, all out; S: the target channel in and out; MS: all in, the target out."""
    target: str | None = None
    """Target column (S, MS); None: the last channel (ETT's OT)."""
    date_column: str | None = "date"
    """csv: the date column (dropped; None: no date column)."""
    period: PositiveInt | None = None
    """Season of the seasonal-naive floor (None: the dataset's, e.g. co2 52, synthetic its period, csv 24)."""
    train_fraction: float = Field(0.5, gt=0.0, lt=1.0)
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    test_fraction: float = Field(0.15, gt=0.0, lt=1.0)
    """Near test (right after val) and, under temporal_shift, the far test (the series' end)."""
    stride: PositiveInt = 1
    """Steps between consecutive training windows (val and test windows: every step)."""
    granularity: Literal["sample", "step"] = "sample"
    """Elements the methods weigh: one per window, or one per forecast time step."""
    missing_in: Literal["test", "all"] = "test"
    """missing_*: mask the inputs of the test split only, or of every split (targets stay observed)."""
    block_length: PositiveInt = 16
    """missing_block: steps per missing block (all channels of a step are missing together)."""
    synthetic: SyntheticConfig = SyntheticConfig()

    @model_validator(mode="after")
    def _layout(self) -> "SeriesConfig":
        used = self.train_fraction + self.val_fraction + 2 * self.test_fraction
        if used > 1.0 + 1e-9:
            raise ValueError(f"series.train_fraction + val_fraction + 2 x test_fraction = {used:g} > 1: the "
                             f"near and far tests must both fit (e.g. 0.5, 0.1, 0.15)")
        return self

    def check_condition(self, perturbation: Any) -> None:
        """One line when the run's condition cannot be served with these keys."""
        if perturbation.horizon_shift and self.features == "MS":
            raise ValueError("condition horizon_shift needs series.features=M or S: the rollout feeds "
                             "forecasts back as inputs, so every input channel must be forecast")
        if perturbation.horizon_shift and self.test_horizon <= self.horizon:
            raise ValueError(f"condition horizon_shift needs series.test_horizon > series.horizon "
                             f"(got {self.test_horizon} <= {self.horizon}): set e.g. series.test_horizon="
                             f"{4 * self.horizon}")
