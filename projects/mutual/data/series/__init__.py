"""Time-series data for long-horizon forecasting, offline only (nothing is downloaded).

=================  =========================================================================
dataset            source
=================  =========================================================================
synthetic_series   generated (:mod:`.synthetic`): seasonality (``series.synthetic.period``),
                   linear trend, AR(1) noise, regime changes at given points; multi-channel
co2                statsmodels: Mauna Loa CO2, weekly 1958-2001 (2,284 steps; gaps linearly
                   interpolated); season 52
sunspots           statsmodels: yearly sunspot numbers 1700-2008 (309 steps); season 11
elnino             statsmodels: monthly Nino 3 sea-surface temperature 1950-2010 (732 steps); season 12
macrodata          statsmodels: US quarterly macro data 1959-2009 (203 steps, 12 channels); season 4
csv                ``data.path`` = a CSV in the ETT / Electricity / Weather layout: a date column
                   (``series.date_column``) then numeric channels; ``series.target`` names the
                   target (default: the last column, ETT's ``OT``); season 24
=================  =========================================================================

:mod:`.loader` cuts the series along time (:mod:`.schema` draws the layout), standardises each
channel with the training part's mean and std, builds (lookback, horizon) windows and applies
the run's condition (temporal shift, missing inputs, horizon change).
"""
from __future__ import annotations

SERIES_DATASETS = ("synthetic_series", "co2", "sunspots", "elnino", "macrodata", "csv")
"""The datasets of ``problem=timeseries`` (torch-free: the config schema checks names)."""
