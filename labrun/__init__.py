"""labrun: an experiment platform for ML research groups, built on MLflow and Optuna."""
__version__ = "0.1.0"
