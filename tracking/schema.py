"""The typed schema every task config subclasses (:class:`TaskConfig`), its shared sections
(checkpoints, divergence), and how a run was asked for (:class:`LaunchOptions`).

Fields marked :func:`execution` say *how* a run executes (checkpoint cadence, threads,
pauses), not *what* it computes: they are logged as params like any other field but left
out of the fingerprint and the group (:mod:`tracking.identity`), so changing them neither
reruns finished sweep cells nor splits a group of seeds in analysis.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Mapping, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from tracking.dotted import get_dotted

RESEARCH_STATUSES = ("exploratory", "keep", "baseline", "failed")


class ConfigError(ValueError):
    """A config, override or option that cannot be used; the message is one line."""


_EXECUTION = "labrun_execution"


def execution(default: Any = None, **kwargs: Any) -> Any:
    """A field that does not define the experiment: same result whatever its value.

    ``sleep_s: float = execution(0.0)``; keyword arguments go to pydantic's ``Field``.
    """
    extra = dict(kwargs.pop("json_schema_extra", None) or {}, **{_EXECUTION: True})
    return Field(default, json_schema_extra=extra, **kwargs)


def is_execution(info: Any) -> bool:
    extra = info.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get(_EXECUTION))


class Section(BaseModel):
    """Base for nested config sections: unknown keys are errors, assignments are checked, and
    every float is finite (a NaN or inf learning rate is refused here, not by torch mid-run)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True,
                              allow_inf_nan=False)


# A task's schema declares its ranges with pydantic's types (PositiveInt, NonNegativeInt,
# PositiveFloat, Field(ge=..., le=...)); finite is every float's default (see Section). A value
# outside them is a one-line error before any run exists, never a crash or an empty run.
SEED_MAX = 2**32 - 1
"""NumPy's seeds stop here; torch's and Python's take it too."""


class CheckpointConfig(Section):
    every: int = 0
    """Save a full-state checkpoint every N global steps (0: only where the task asks)."""
    keep: int = 2
    """How many periodic checkpoints to keep in the store (the best one is kept apart)."""
    quantize_moments: bool = False
    """Store optimizer moments in 8 bits: ~3x smaller, but resume is no longer bit-identical."""
    snapshot: Literal["copy", "deferred"] = "deferred"
    """deferred: big tensors are copied on the writer thread, and the loop waits for that copy
    only where it could change them: its next ``optimizer.step()``, a tracked module's forward
    (in-place buffers) or ``load_state_dict``, a restore (:func:`tracking.checkpoint.apply`)
    or the next save; the stall is ~3% of ``torch.save``'s time instead of the copy's ~15%
    (bench/checkpoint.py). Any other in-place change torch counts before the next step makes
    that one file impossible: it is skipped, tagged ``labrun.checkpoint.torn``, and the run
    goes on with ``copy``. copy: every tensor is copied before ``save_checkpoint`` returns;
    for loops that write through ``p.data`` or NumPy views between a save and the next step
    (see :class:`tracking.checkpoint.Deferred`)."""


class DivergenceConfig(Section):
    """What a non-finite value of a watched metric means: an execution setting, because the
    training up to that step is the same either way; only how the run is recorded differs."""

    on_nonfinite: Literal["fail", "record"] = "fail"
    """fail: the run ends FAILED at that step (``labrun.failure: NonFinite: ...``), its last
    good checkpoint kept; record: tag ``labrun.diverged=<step>``, stop training and finish
    (for studies where divergence is the result)."""
    metrics: Optional[list[str]] = None
    """Metric names to watch (None: the task's ``nonfinite_metrics``, ``loss.total``)."""


class ExecutionConfig(Section):
    """How this machine runs the task: never part of what the run computes, so out of the
    fingerprint and the group. ``start_run`` applies it before the run exists."""

    num_threads: Optional[int] = Field(None, ge=0)
    """torch CPU threads (0 or None: torch's default; not given: the task's default_num_threads)."""
    dist_timeout_s: float = Field(900.0, gt=0)
    """Under torchrun: a collective that waits longer fails the run (a hung rank), not forever."""


MOVED_KEYS: dict[str, str] = {"train.num_threads": "execution.num_threads"}
"""Config keys that moved: the old spelling (a YAML file, ``--set``, a resumed run's config)
still means the new key."""


def moved(data: dict[str, Any], renames: Mapping[str, str]) -> dict[str, Any]:
    """``data`` with each old dotted key of ``renames`` moved to its new place (a copy when
    anything moves); a value already given under the new key wins."""
    for old, new in renames.items():
        if not isinstance(_section(data, old), dict):
            continue
        data = _deep_copy(data)
        value = _section(data, old).pop(old.rpartition(".")[2])
        target = _section(data, new, create=True)
        if isinstance(target, dict):
            target.setdefault(new.rpartition(".")[2], value)
    return data


def _section(tree: dict[str, Any], key: str, create: bool = False) -> Any:
    """The mapping that holds ``key``'s last part: None when a part is missing (or, with
    ``create``, a new empty mapping); the value itself when it is not a mapping."""
    node: Any = tree
    for part in key.split(".")[:-1]:
        if not isinstance(node, dict):
            return node
        if part not in node and create:
            node[part] = {}
        node = node.get(part)
    if not create and isinstance(node, dict) and key.rpartition(".")[2] not in node:
        return None
    return node


def _deep_copy(tree: Any) -> Any:
    return {k: _deep_copy(v) for k, v in tree.items()} if isinstance(tree, dict) else tree


class TaskConfig(Section):
    """Base of every task's config schema.

    A task subclasses it, sets ``task`` (the MLproject entry point name) and optionally
    ``method_key`` (the dotted key whose value is the run's ``labrun.method`` tag).
    """

    task: ClassVar[str] = "task"
    method_key: ClassVar[str | None] = None
    packages: ClassVar[tuple[str, ...]] = ()
    """The task's own libraries, whose versions go into environment.json."""
    nonfinite_metrics: ClassVar[tuple[str, ...]] = ("loss.total",)
    """The training losses whose non-finite value is divergence (``divergence.metrics``)."""
    default_num_threads: ClassVar[int | None] = None
    supports_distributed: ClassVar[bool] = False
    """The task trains under torchrun/DDP (``--nproc N``); False: it refuses N > 1 in one line."""
    """``execution.num_threads`` when the config does not say (None: torch's default)."""
    moved_keys: ClassVar[Mapping[str, str]] = MOVED_KEYS
    """Old dotted keys still accepted, and where they now live (:data:`MOVED_KEYS`)."""
    shorthands: ClassVar[Mapping[str, str]] = {}
    """Command-line names for a dotted key, given a plain value: ``{"method": "method.name"}``
    makes ``--set method=naive`` (and ``mlflow run -P method=naive``) set ``method.name``. An
    MLproject passes them as ordinary overrides, never as declared parameters with defaults,
    so a key the user did not give never overrides the config file."""

    seed: int = Field(0, ge=0, le=SEED_MAX)
    """The run's seed (0 .. 2**32-1): Python, NumPy and torch are seeded from it."""
    condition: str = "default"
    device: str = "auto"
    deterministic: bool = True
    checkpoint: CheckpointConfig = execution(CheckpointConfig())
    """How often to save and how many files to keep: an execution setting."""
    divergence: DivergenceConfig = execution(DivergenceConfig())
    """A NaN/inf training loss: fail the run (default) or record it and finish."""
    execution: ExecutionConfig = execution(ExecutionConfig())
    """Threads and other settings of this machine (:class:`ExecutionConfig`)."""

    _launch: "LaunchOptions" = PrivateAttr(default=None)


    def distributed_refusal(self) -> str | None:
        """Why this config cannot run on many processes although the task can (None: it can);
        said in one line before any run exists."""
        return None
    @model_validator(mode="before")
    @classmethod
    def _platform_keys(cls, data: Any) -> Any:
        """Old keys moved to their new place; the task's thread default where none is given."""
        if not isinstance(data, dict):
            return data
        data = moved(data, cls.moved_keys)
        exe = data.get("execution")
        if cls.default_num_threads is not None and (exe is None or (isinstance(exe, dict)
                                                                    and "num_threads" not in exe)):
            data = {**data, "execution": {**(exe or {}), "num_threads": cls.default_num_threads}}
        return data

    @property
    def launch(self) -> "LaunchOptions":
        """How this config was asked for: base file, overrides, tags, status, resume."""
        if self._launch is None:
            self._launch = LaunchOptions()
        return self._launch

    @property
    def method_tag(self) -> str:
        """Value of the ``labrun.method`` tag: the ``method_key`` entry, else 'default'."""
        if not self.method_key:
            return "default"
        return str(get_dotted(self.model_dump(mode="json"), self.method_key))

    @classmethod
    def config_dir(cls) -> Path:
        """The task's ``configs/`` folder, beside the module that defines the schema."""
        module = sys.modules[cls.__module__]
        return Path(module.__file__).resolve().parent / "configs"


@dataclass
class LaunchOptions:
    """Run-level options from the command line that are not part of the resolved config."""

    command: str = "labrun run"
    """The command the user typed (:func:`tracking.argv.command_name`): errors start with it."""
    base_config: str | None = None
    overrides: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    status: str = "exploratory"
    name: str | None = None
    description: str = ""
    resume: str | None = None
    trust_checkpoints: bool = False
    """``--trust-checkpoints``: load checkpoints without the allow-list (a user's own files)."""
    experiment: str | None = None
    system_metrics: str = "auto"
    """on | off | auto: MLflow's system metrics (tracking.sysmetrics); auto after 3 s."""
    register_model: str | None = None
    """Register the model the task logs (``run.log_model``) under this name."""
    log_model: str = "auto"
    """on | off | auto: log the task's model; auto skips runs under 20 s (tests, smoke runs)."""
    topology: dict[str, Any] = field(default_factory=dict)
    """``--nproc``, ``--nnodes``, ``--node-rank``, ``--rdzv-endpoint`` as given (torchrun's)."""


C = TypeVar("C", bound=TaskConfig)
