"""The ssvae task's typed schema: every key, its type and its range (torch-free, so ``labrun
run ssvae --help`` and sweep planning are instant). ``train.py`` re-exports :class:`Config`,
the name the run contract looks for."""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator

from tracking import Section, TaskConfig


class DataConfig(Section):
    dataset: Literal["digits", "mnist", "fashion_mnist", "kmnist"] = "digits"
    """digits ships with scikit-learn; the torchvision ones need data.root (never downloaded)."""
    root: str | None = None
    """Folder that already holds the torchvision files (e.g. <root>/MNIST/raw)."""
    labelled_fraction: float = Field(0.1, gt=0.0, le=1.0)
    """Share of the training images whose labels the model sees (stratified, fixed per seed)."""
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    """digits only: held-out share (metric.accuracy.val is measured on it)."""
    max_train: int | None = Field(None, ge=10)
    """Use at most this many training images (quick runs on MNIST)."""


class ModelConfig(Section):
    encoder: Literal["mlp", "conv"] = "mlp"
    hidden: int = Field(256, ge=1)
    latent_dim: int = Field(8, ge=1)
    num_components: int = Field(10, ge=1)
    """K; the tau-classifier needs K >= number of classes."""
    prior: Literal["mixture", "normal"] = "mixture"
    """mixture: learnable Gaussian per component (GMVAE); normal: N(0, I), decoder sees c (M2)."""
    prior_spread: float = Field(1.0, ge=0.0)
    """Scale of the random initial component means."""
    learn_pi: bool = False
    """Learn the mixture weights pi (else uniform)."""
    decoder: Literal["bernoulli", "gaussian"] = "bernoulli"
    """gaussian: heteroscedastic, per-pixel sigma clamped to [sigma_min, sigma_max]."""
    sigma_min: float = Field(0.05, gt=0.0)
    sigma_max: float = Field(1.0, gt=0.0)
    kl_weight: float = Field(1.0, ge=0.0)
    """Weight of KL(q(z|x,c) || p(z|c)) (beta)."""

    @field_validator("sigma_max")
    @classmethod
    def _above_min(cls, v: float, info: ValidationInfo) -> float:
        lo = info.data.get("sigma_min")
        if lo is not None and v <= lo:
            raise ValueError(f"must be larger than model.sigma_min={lo}")
        return v


class TrainConfig(Section):
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0.0)
    eval_every: int = Field(1, ge=1)
    """Epochs between accuracy / k_eff evaluations (the last epoch is always evaluated)."""
    fail_at_epoch: int | None = None
    """Raise at this epoch: shows what a crashed run leaves (and lets --resume be tried)."""


class TauConfig(Section):
    enabled: bool = True


class ClassifierConfig(Section):
    weight: float = 10.0
    """Mean cross-entropy over a batch's labelled images, component k read as label
    k mod classes; 0 = off."""


class DiversityConfig(Section):
    weight: float = 0.0
    """> 0 rewards entropy of the average responsibilities (against collapse), < 0 penalises it."""


class DirichletConfig(Section):
    weight: float = 0.0
    """Prior on pi (needs model.learn_pi); 0 = off."""
    alpha: float = Field(2.0, gt=0.0)
    """> 1 keeps pi spread out, < 1 pushes it to few components."""


class DiagnosticsConfig(Section):
    figures: bool = True
    points: int = Field(1000, ge=10)
    """Held-out images in the latent-space figure."""
    reconstructions: int = Field(10, ge=1)
    samples_per_component: int = Field(8, ge=1)
    active_threshold: float = Field(0.01, ge=0.0, le=1.0)
    """A component is active when its average responsibility is at least this."""


class Config(TaskConfig):
    task: ClassVar[str] = "ssvae"
    method_key: ClassVar[str] = "model.prior"
    default_num_threads: ClassVar[int | None] = 1
    """These nets are small: one thread beats several fighting over a shared machine."""
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    tau_classifier: TauConfig = TauConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    diversity: DiversityConfig = DiversityConfig()
    dirichlet: DirichletConfig = DirichletConfig()
    diagnostics: DiagnosticsConfig = DiagnosticsConfig()
