"""Launchers: how a cell's process is started (local pool, ``mlflow run``, submitit/Slurm, Ray).

``Launcher`` in :mod:`sweeps.launchers.base` is the extension point; ``make_launcher``
picks one by the name a spec gives.
"""
from sweeps.launchers.base import Job, Launcher, make_launcher, outcome_of

__all__ = ["Job", "Launcher", "make_launcher", "outcome_of"]
