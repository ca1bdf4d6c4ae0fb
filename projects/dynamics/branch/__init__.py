"""Branch simulation's episode (the second half of the dynamics study): when the trigger
fires, rewind to cp_{t-k}, let Optuna propose corrective actions, score them with the
calibrated proxy (:mod:`projects.dynamics.proxy`), verify the best few by real rollouts and
apply one.

Modules: ``actions`` (the action space and how an action is held in the trainer),
``verify`` (real rollouts and their outcomes), ``orchestrator`` (:class:`Brancher`: the
episode), ``record`` (nested MLflow runs). Nothing heavy is imported here: ``trainer.py``
imports ``actions`` on every build.
"""
