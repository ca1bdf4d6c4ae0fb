"""The branch simulation's cheap forecaster of training dynamics: what it sees, what it
predicts and how far to trust it.

Modules: ``features`` (state features over a window W), ``model`` (the MLP forecaster:
E[loss@N], P(divergence), recovery time), ``conformal`` (split-conformal calibration, crepes),
``logdb`` (the ``log_db.parquet`` schema), ``collect`` (the proxy's pre-training data).
"""
