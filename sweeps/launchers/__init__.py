"""Launchers: how a cell's process is started (local pool, ``mlflow run``, submitit/Slurm, Ray).

``Launcher`` in :mod:`sweeps.launchers.base` is the extension point: a subclass with a
``name`` registers itself, and ``make_launcher`` builds one by the name a spec gives.
"""
from sweeps.launchers.base import (Job, Launcher, LauncherOptions, launcher_class, make_launcher,
                                   outcome_of, registered)

__all__ = ["Job", "Launcher", "LauncherOptions", "launcher_class", "make_launcher", "outcome_of",
           "registered"]
