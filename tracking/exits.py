"""Exit codes of a task process: the contract launchers read a cell's outcome from."""
from __future__ import annotations

EXIT_FINISHED = 0
EXIT_FAILED = 1       # an exception; the run is FAILED with labrun.failure
EXIT_CONFIG = 2       # bad config/override/data settings; no run was created
EXIT_PRUNED = 3       # an observer (Optuna pruner) stopped the run: KILLED, labrun.pruned=true
EXIT_SIGINT = 130     # Ctrl-C: KILLED, checkpoints kept
EXIT_SIGTERM = 143    # SIGTERM: KILLED, checkpoints kept
EXIT_CELLS_FAILED = 1  # a sweep: some cells did not finish (each cell's own code is in its run)
