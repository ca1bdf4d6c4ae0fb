"""Anomaly detection on anomalib: one trainer, a model factory, experiment-conditions files."""
