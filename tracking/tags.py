"""Every tag name labrun writes or reads: the vocabulary analysis and sweeps rely on.

MLflow keeps its own names in one module (``mlflow.utils.mlflow_tags``); labrun does the same
so that a rename is one line and a typo is an ImportError, not a silently empty column.
The names are part of the design card (``DESIGN.md``): never rename one without a migration.
"""
from __future__ import annotations

PREFIX = "labrun."

# --- what the run is (set by start_run from the config) ------------------------------------
TASK = "labrun.task"
METHOD = "labrun.method"
SEED = "labrun.seed"
CONDITION = "labrun.condition"
STATUS = "labrun.status"                 # research status: exploratory | keep | baseline | failed
FINGERPRINT = "labrun.fingerprint"       # identical work (experiment fields incl. seed)
GROUP = "labrun.group"                   # the seeds of one cell (experiment fields without seed)
COMPONENT_PREFIX = "labrun.component."   # + component name -> success | disabled | failed

# --- provenance -----------------------------------------------------------------------------
GIT_COMMIT = "labrun.git.commit"
GIT_DIRTY = "labrun.git.dirty"
GIT_BRANCH = "labrun.git.branch"
GIT_REMOTE = "labrun.git.remote"
HOST = "labrun.host"
PID = "labrun.pid"
DEVICE = "labrun.device"
HEARTBEAT = "labrun.heartbeat"           # unix time, refreshed while the process lives
WORLD_SIZE = "labrun.world_size"         # processes of one DDP run (torchrun); absent: one
DIST_BACKEND = "labrun.dist.backend"     # gloo | nccl

# --- how it ended / continued ---------------------------------------------------------------
FAILURE = "labrun.failure"               # "Type: message"
PRUNED = "labrun.pruned"                 # "true": an observer stopped it on purpose
RESUMED_FROM = "labrun.resumed_from"
RESUMED_STEP = "labrun.resumed_step"
DIVERGED = "labrun.diverged"             # the step at which a watched metric became non-finite
CHECKPOINT_TORN = "labrun.checkpoint.torn"  # a deferred snapshot changed under it: file skipped
WITHDRAWN = "labrun.withdrawn"           # a claim that lost to an earlier one (the winner's run id)
CLAIM = "labrun.claim"                   # the sweep worker that claimed the cell (host:pid)

# --- sweeps and studies ---------------------------------------------------------------------
KIND = "labrun.kind"                     # sweep | study | analysis (parent runs)
SWEEP = "labrun.sweep"                   # a cell's sweep name
SWEEP_ENTRY = "labrun.sweep.entry"
JOB = "labrun.job"
ATTEMPT = "labrun.attempt"
SURPLUS = "labrun.surplus"
PRUNER = "labrun.pruner"
PROJECT = "labrun.project"               # a foreign MLflow project's cell: the project it ran
FOREIGN = "labrun.foreign"               # "true": a cell of a project labrun did not write
MODEL = "labrun.model"                   # status of the logged MLflow model (+ ".<name>" for more)

# --- Optuna studies: tags on a study's parent run and its trials' runs ----------------------
OPTUNA_STUDY = "optuna.study"
OPTUNA_STORAGE = "optuna.storage"        # the study parent's storage URL, password removed
OPTUNA_TRIAL = "optuna.trial"            # the trial number
OPTUNA_SEED_INDEX = "optuna.seed_index"  # which of the spec's seeds this run is

# --- analysis runs --------------------------------------------------------------------------
ANALYSIS = "labrun.analysis"
ANALYSIS_PREFIX = "labrun.analysis."

# Tags that change while a run lives: left out of config.yaml's header.
VOLATILE = frozenset({HEARTBEAT, PID})
# The reserved tags a sweep launcher passes to its cells with --tag (the cell's description is
# MLflow's note, as --description sets it); a user's --tag may not set any other labrun.* or
# mlflow.* key.
FRESH_START = "labrun.fresh_start"       # a cell rerun from scratch: why its resume source was unusable
LAUNCH_TAGS = frozenset({SWEEP, ATTEMPT, JOB, FRESH_START, "mlflow.note.content"})


def component(name: str) -> str:
    return COMPONENT_PREFIX + name


def analysis(key: str) -> str:
    return ANALYSIS_PREFIX + key
