"""The ired task's config schema: every key, its type, its bounds and why it exists.

Kept free of torch so the ``labrun`` CLI can load it instantly; ``train.Config`` is this
module's :class:`Config` (the module-level name the run contract looks for).
"""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from tracking import Section, TaskConfig, execution


class DataConfig(Section):
    n: PositiveInt = 20
    """Matrix size: inputs and targets have n*n entries (published: 20 -> 400 dims)."""
    n_val: PositiveInt = 1024
    n_test: PositiveInt = 1024
    ood_shift: PositiveFloat = 0.1
    """Diagonal of the harder OOD set (A = R + R^T + ood_shift I; in-distribution is 0.5)."""
    mean_floor_samples: PositiveInt = 10_000
    """Training targets drawn to compute the per-entry-mean floor."""


class ModelConfig(Section):
    kind: Literal["energy", "feedforward"] = "energy"
    hidden: PositiveInt = 512
    layers: PositiveInt = 3
    """Hidden layers (published: 3 of 512)."""
    time_dim: PositiveInt = 128
    """Width of the sinusoidal time embedding and its MLP (energy model only)."""


class DiffusionConfig(Section):
    timesteps: PositiveInt = 10
    inference_opt_steps: NonNegativeInt = 5
    """Energy-descent steps per timestep when sampling answers."""
    clamp: PositiveFloat = 2.0
    """Bound on clean-space answers (published: 2 for continuous tasks)."""
    reject_uphill: bool = True
    """Undo inference steps that raise a sample's energy."""


class MiningConfig(Section):
    strategy: Literal["none", "random", "adversarial", "mixed"] = "adversarial"
    energy_weight: NonNegativeFloat = 0.5
    """Weight of softplus(E_pos - E_neg) in the loss (published: 0.5)."""
    negative_noise: PositiveFloat = 3.0
    """Negatives start from the target noised this many times the positive's noise."""
    opt_steps: NonNegativeInt = 2
    """Energy steps of adversarial mining (published negative: 2)."""
    ascent_lr: PositiveFloat = 1.0
    """Mining step = ascent_lr x the schedule's step size at t (1.0 = published)."""
    direction: Literal["descent", "ascent"] = "descent"
    """descent: hard negatives (low energy, wrong); ascent: easy ones (for ablations)."""
    noise_scale: NonNegativeFloat = 0.0
    """Gaussian noise per mining step, in units of the noise level sqrt(1 - alpha_bar_t)."""
    reject_uphill: bool = True
    """Undo mining steps that move the energy the wrong way."""
    adversarial_fraction: float = Field(0.3, ge=0.0, le=1.0)
    """mixed: share of each batch mined adversarially (the rest random)."""
    random_source: Literal["noised_target", "shuffled_target"] = "noised_target"
    """random: the target noised 3x, or another problem's target."""


class TrainConfig(Section):
    steps: PositiveInt = 20_000
    batch_size: PositiveInt = 256
    lr: PositiveFloat = 1e-4
    lr_schedule: Literal["constant", "cosine"] = "constant"
    lr_cosine_start: NonNegativeInt = 0
    """Step where cosine decay begins (constant before)."""
    lr_min_ratio: float = Field(0.0, ge=0.0, le=1.0)
    grad_clip: NonNegativeFloat = 1.0
    """Max gradient norm (0: no clipping); both norms are logged."""
    ema_decay: float = Field(0.995, ge=0.0, lt=1.0)
    """0 disables EMA (evaluation then uses the raw weights)."""
    eval_every: PositiveInt = 500
    train_eval_size: PositiveInt = 256
    """Samples of the current batch scored for metric.mse.train."""
    early_stopping_patience: NonNegativeInt = 0
    """Stop after this many evaluations without val improvement (0: never)."""
    early_stopping_min_delta: NonNegativeFloat = 0.0
    flush_denormal: bool = True
    """Flush denormal floats to zero on CPU: without it, mining gradients drift into
    denormals and an adversarial step slowed ~5x after a few hundred steps (measured)."""
    sleep_s: NonNegativeFloat = execution(0.0, ge=0.0)
    """Pause per step: lets a person (or a test) interrupt a run mid-way."""


class ConditioningDiag(Section):
    enabled: bool = True
    samples: PositiveInt = 256


class EnergyGapDiag(Section):
    enabled: bool = True
    samples: PositiveInt = 128
    """Size of the fixed diagnostic batch probed at every evaluation."""


class FalseNegativesDiag(Section):
    enabled: bool = True
    threshold: PositiveFloat = 0.002
    """A negative within this per-entry MSE of the true inverse counts as a false negative
    (about a tenth of the all-zeros floor at n=20)."""


class DiagnosticsConfig(Section):
    conditioning: ConditioningDiag = ConditioningDiag()
    energy_gap: EnergyGapDiag = EnergyGapDiag()
    false_negatives: FalseNegativesDiag = FalseNegativesDiag()


class Config(TaskConfig):
    task: ClassVar[str] = "ired"
    method_key: ClassVar[str] = "mining.strategy"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    diffusion: DiffusionConfig = DiffusionConfig()
    mining: MiningConfig = MiningConfig()
    train: TrainConfig = TrainConfig()
    diagnostics: DiagnosticsConfig = DiagnosticsConfig()

    @property
    def method_tag(self) -> str:
        """The mining strategy, or ``feedforward`` for the baseline (which mines nothing)."""
        return "feedforward" if self.model.kind == "feedforward" else self.mining.strategy
