"""The bulk SQL metric writer now lives in :mod:`tracking.backends` (with every other use of
MLflow's schema and of private MLflow/Optuna API); these names stay importable from here."""
from __future__ import annotations

from tracking.backends import COLUMNS, SqlMetricWriter, metric_writer

EXPECTED = set(COLUMNS["metrics"])

__all__ = ["EXPECTED", "SqlMetricWriter", "metric_writer"]
