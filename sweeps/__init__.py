"""sweeps: MANY runs of one task entry point — run matrices that resume, and Optuna studies.

Modules are named for what they hold: ``spec`` (the YAML schemas), ``matrix`` (cells and
their fingerprints), ``ledger`` (what the store already holds for those fingerprints),
``launchers/`` (how a cell's process is started), ``sweep`` (the run-matrix driver),
``study/`` (Optuna studies: storage, space, trial runner, driver), ``pruning`` (the observer
that feeds Optuna from inside a run), ``cli``. Nothing here knows any task: tasks are found
by MLproject entry point name.
Heavy imports (mlflow, optuna) stay inside functions so ``labrun --help`` is instant.
"""
