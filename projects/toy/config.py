"""The toy task's typed schema: every key, its type and its range (torch-free, so ``labrun run
toy --help`` and sweep planning are instant). ``train.py`` re-exports :class:`Config`, the
name the run contract looks for."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from tracking import Section, TaskConfig, execution


class DataConfig(Section):
    n_train: PositiveInt = 512
    n_val: PositiveInt = 256
    n_features: PositiveInt = 8
    noise: NonNegativeFloat = 0.1
    """Standard deviation of the Gaussian noise on the targets."""


class ModelConfig(Section):
    hidden: PositiveInt = 32
    activation: Literal["relu", "tanh"] = "relu"


class TrainConfig(Section):
    steps: PositiveInt = 200
    batch_size: PositiveInt = 32
    lr: PositiveFloat = 1e-2
    optimizer: Literal["adam", "sgd"] = "adam"
    eval_every: PositiveInt = 20
    """Steps between validation losses (the last step is always evaluated)."""
    sleep_s: NonNegativeFloat = execution(0.0)
    """Pause per step: lets a person (or a test) interrupt a run mid-way."""
    fail_at_step: NonNegativeInt | None = None
    """Raise at this step: shows what a crashing run leaves in the store."""
    fail_rank: NonNegativeInt | None = execution(None)
    """Under ``--nproc``: only this rank fails at ``fail_at_step`` (None: every rank)."""
    fail_kind: Literal["raise", "hang"] = execution("raise")
    """How it fails: an exception, or a hang (what a stuck rank looks like to the others)."""


class DiagnosticsConfig(Section):
    weight_norms: bool = True
    residuals: bool = False
    broken_probe: bool = False
    """A diagnostic whose code raises: the run must still finish, reporting it failed."""


class Config(TaskConfig):
    task: ClassVar[str] = "toy"
    method_key: ClassVar[str] = "train.optimizer"
    supports_distributed: ClassVar[bool] = True
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    diagnostics: DiagnosticsConfig = DiagnosticsConfig()
