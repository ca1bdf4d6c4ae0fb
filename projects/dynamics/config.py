"""The ``dynamics`` task's typed schema (torch-free, so ``labrun run dynamics --help`` is fast).

Sections: ``data`` (corpus and tokens), ``model`` (the GPT), ``train`` (optimiser, schedule,
the stabiliser under test), ``instability`` (spikes and noise injected on purpose),
``monitor`` (the uncertainty index and its trigger), ``events`` (the instability rule the
study counts), ``branch`` (branch simulation: rewind, proxy search, verification). Every key is documented where it is declared; ``--help`` lists them all.
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import (Field, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, field_validator,
                      model_validator)

from tracking import Section, TaskConfig, execution
from tracking.schema import SEED_MAX

STABILISERS = ("none", "cosine", "clip", "zclip", "spam", "adam_hd")


class DataConfig(Section):
    source: str = "pydoc"
    """'pydoc' (the Python docs text in pydoc_data.topics, ships with Python), a UTF-8 text
    file, or a WikiText folder holding wiki.train.tokens/wiki.valid.tokens (.raw too)."""
    tokens: Literal["char", "byte"] = "char"
    """'char': one token per distinct character of the corpus; 'byte': the 256 UTF-8 bytes."""
    context: PositiveInt = 64
    """Tokens per training sequence (the attention window)."""
    val_fraction: float = 0.1
    """Tail of a single-file corpus held out for validation perplexity."""
    max_chars: NonNegativeInt = 0
    """Use only the first N characters of the corpus (0: all of it)."""

    @field_validator("source")
    @classmethod
    def _source_exists(cls, v: str) -> str:
        if v != "pydoc" and not Path(v).expanduser().exists():
            raise ValueError(f"no such file or folder {v!r}; valid: 'pydoc', a UTF-8 text file, "
                             "or a WikiText folder")
        return v

    @field_validator("val_fraction")
    @classmethod
    def _fraction(cls, v: float) -> float:
        if not 0.0 < v < 0.5:
            raise ValueError(f"val_fraction must be in (0, 0.5), got {v}")
        return v


class ModelConfig(Section):
    layers: PositiveInt = 2
    d_model: PositiveInt = 64
    heads: PositiveInt = 4
    mlp_ratio: PositiveInt = 4
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelConfig":
        if self.d_model % self.heads:
            raise ValueError(f"model.d_model ({self.d_model}) must be divisible by model.heads ({self.heads})")
        return self


class TrainConfig(Section):
    steps: PositiveInt = 1500
    batch_size: PositiveInt = 16
    lr: PositiveFloat = 3e-3
    """Base (peak) learning rate."""
    schedule: Literal["constant", "cosine"] = "constant"
    """Base schedule; stabiliser 'cosine' switches to cosine with warm-up whatever this says."""
    warmup: NonNegativeInt = 0
    """Linear warm-up steps of the schedule (stabiliser 'cosine' uses train.cosine_warmup)."""
    cosine_warmup: NonNegativeInt = 100
    min_lr_ratio: float = Field(0.1, ge=0.0, le=1.0)
    """Cosine floor as a fraction of the peak LR."""
    weight_decay: NonNegativeFloat = 0.0
    betas: tuple[float, float] = (0.9, 0.99)
    stabiliser: Literal["none", "cosine", "clip", "zclip", "spam", "adam_hd"] = "none"
    """The baseline under test: none, cosine (schedule with warm-up), clip (fixed-norm gradient
    clipping), zclip (z-score adaptive clipping, zclip package), spam (SPAM optimiser,
    pytorch-optimizer), adam_hd (Adam with hypergradient-descent learning rate)."""
    clip_norm: PositiveFloat = 1.0
    """Max gradient norm of stabiliser 'clip'."""
    zclip_alpha: float = 0.97
    zclip_z: float = 2.5
    zclip_warmup: NonNegativeInt = 25
    spam_threshold: float = 5000.0
    """SPAM spike threshold (clip where g^2 > threshold * v)."""
    spam_reset_gap: PositiveInt = 500
    """SPAM momentum reset interval (steps)."""
    hd_beta: float = 1e-7
    """Adam-HD hypergradient step size on the learning rate (the paper's beta for Adam)."""
    eval_every: PositiveInt = 100
    eval_batches: PositiveInt = 4
    activations_every: NonNegativeInt = 10
    """Log per-layer activation summaries (mean, std, entropy) every N steps (0: never)."""
    bf16: bool = True
    """bf16 autocast on CUDA (ignored on the CPU, where runs stay fp32 and bit-exact)."""
    sleep_s: NonNegativeFloat = execution(0.0)
    """Pause per step: lets a person (or a test) interrupt a run mid-way."""


class InstabilityConfig(Section):
    lr_spikes: list[int] = []
    """Steps at which the learning rate is multiplied by lr_spike_factor."""
    lr_spike_factor: PositiveFloat = 30.0
    lr_spike_len: PositiveInt = 3
    """Steps each LR spike lasts."""
    noisy_steps: list[int] = []
    """Steps whose batch is corrupted (see noise)."""
    noise_prob: float = Field(0.0, ge=0.0, le=1.0)
    """Besides noisy_steps: probability that any step's batch is corrupted."""
    noise: Literal["shuffle", "random"] = "random"
    """'shuffle': tokens permuted within each sequence; 'random': uniform random tokens."""


class MonitorConfig(Section):
    enabled: bool = True
    w_volatility: float = 1.0
    w_entropy: float = 0.5
    w_disagreement: float = 0.5
    tau: float = 4.0
    """The trigger fires when the index rises above tau ..."""
    tau_low: float = 1.0
    """... and re-arms only after it falls below tau_low (hysteresis: one spike, one trigger)."""
    ema_decay: float = Field(0.9, ge=0.0, lt=1.0)
    """EMA of the loss whose residual is the volatility signal."""
    window: PositiveInt = 50
    """Trailing window (steps) over which every raw signal is z-scored."""
    warmup: NonNegativeInt = 20
    """Steps before a signal's z-score counts (fewer samples: the signal is 0)."""
    forecasters: PositiveInt = 3
    """K: small GRU forecasters trained online on the loss history."""
    horizon: PositiveInt = 5
    """N: steps ahead each forecaster predicts."""
    history: PositiveInt = 8
    """Loss values each forecaster reads (the cost of the monitor grows with it)."""
    hidden: PositiveInt = 16
    forecaster_lr: PositiveFloat = 0.01
    loss_tau: float = 4.0
    """Ablation D: threshold of the single-signal trigger on the loss residual z-score."""


class EventsConfig(Section):
    k: float = 4.0
    """An instability event starts where the loss exceeds its EMA by more than k trailing
    standard deviations of the residual (or is not finite)."""
    k_recover: float = 2.0
    """... and ends (recovered) once the loss is back within EMA + k_recover * std ..."""
    calm: PositiveInt = 5
    """... for this many consecutive steps (recovery step: the first of them)."""
    ema_decay: float = Field(0.95, ge=0.0, lt=1.0)
    window: PositiveInt = 50
    warmup: NonNegativeInt = 50
    """Steps before events can start (the band needs a history)."""
    max_recover: PositiveInt = 300
    """An event still open after this many steps is closed as unrecovered (new level)."""
    lead: NonNegativeInt = 10
    """A trigger anticipates an event if it fires at most this many steps before it (or at it)."""


class ActionConfig(Section):
    """One corrective action (the rule of ablation A); the proxy searches the same space."""

    lr: Literal[-0.2, -0.1, 0.0, 0.1] = -0.2
    """Relative change of the learning rate while the action holds."""
    wd: Literal[0.5, 1.0, 2.0] = 1.0
    """Factor on the weight decay while the action holds (a no-op where it is 0)."""
    clip: Literal["keep", "off", "zclip", "fixed", "spam"] = "fixed"
    """Gradient clipping while the action holds: keep (the run's own), off, ZClip, fixed-norm
    (train.clip_norm), SPAM-style."""
    momentum_reset: bool = True
    """Zero the optimiser's first moments at the branch point."""
    reorder: Literal["none", "shuffle_block"] = "none"
    """'shuffle_block': redraw the data stream from the branch point (seeded by the manifest)."""
    skip: bool = False
    """Skip updates on batches whose loss leaves the event band while the action holds."""


class BranchConfig(Section):
    enabled: bool = False
    """Branch simulation: when the trigger fires, rewind k steps, search actions, apply one."""
    mode: Literal["rules", "proxy", "proxy_verify"] = "proxy_verify"
    """'rules': apply branch.rule (ablation A); 'proxy': the proxy's best action unverified (B);
    'proxy_verify': the top_k verified by real rollouts (C, the full method)."""
    signal: Literal["index", "loss"] = "index"
    """What fires a branch: the uncertainty index trigger, or the loss-only trigger (ablation D)."""
    k: int = 4
    """Steps back from the trigger to the branch point cp_{t-k}."""
    horizon: int = 16
    """N: steps ahead the proxy forecasts and each verification rollout runs (> k)."""
    hold: int = 16
    """Steps an action stays in force from the branch point (then the run's own settings return)."""
    window: int = 10
    """W: steps over which the state features' EMA and deltas are taken."""
    proposals: int = 64
    """Actions the Optuna study proposes per episode (ask/tell, in memory)."""
    top_k: int = 3
    """Candidates verified for real (proxy_verify)."""
    alpha: float = 1.0
    """score = alpha * -E[loss@N] + beta * -risk + gamma * -recovery."""
    beta: float = 1.0
    gamma: float = 0.02
    confidence: float = 0.9
    """Nominal coverage of the proxy's split-conformal loss interval."""
    risk_level: float = 0.9
    """Level of the calibrated upper quantile of loss@N (the risk quantile)."""
    allow_skip: bool = False
    """Let the search propose skip-batch actions (off: skipping biases the data)."""
    cooldown: int = 16
    """Steps after an episode during which the trigger does not branch again."""
    max_episodes: int = 0
    """Stop branching after this many episodes (0: no limit)."""
    from_files: bool = False
    """Branch from the run's checkpoint files instead of the in-memory snapshots of the last k steps."""
    pretrain: str = "auto"
    """Proxy pre-training data: 'auto' (collected once from a baseline run of this config with
    pretrain_seed, cached), 'none', or a log_db.parquet path."""
    pretrain_seed: int = Field(1000, ge=0, le=SEED_MAX)
    """Seed of the baseline run the warm-up collection branches from (not an evaluated seed)."""
    cache_dir: str | None = execution(None)
    """Where 'auto' pre-training logs are cached ($LABRUN_BRANCH_CACHE, else ~/.cache/labrun/branch)."""
    pretrain_points: int = 6
    """Branch points of the warm-up collection (trigger steps of the baseline run, then spread)."""
    pretrain_actions: int = 6
    """Random actions rolled out per warm-up branch point (plus no change)."""
    hidden: int = 64
    """Width of the proxy MLP."""
    epochs: int = 150
    """Full-batch Adam steps per proxy fit."""
    refit: bool = True
    """Refit the proxy after every verified episode on the log including the new rows."""
    rule: ActionConfig = ActionConfig()

    @model_validator(mode="after")
    def _horizon(self) -> "BranchConfig":
        if self.k < 1 or self.horizon <= self.k:
            raise ValueError(f"branch.horizon ({self.horizon}) must exceed branch.k ({self.k}) >= 1")
        if self.proposals < 1 or self.top_k < 1:
            raise ValueError("branch.proposals and branch.top_k must be >= 1")
        if not 0 < self.confidence < 1 or not 0 < self.risk_level < 1:
            raise ValueError("branch.confidence and branch.risk_level must be in (0, 1)")
        return self


class Config(TaskConfig):
    task: ClassVar[str] = "dynamics"
    method_key: ClassVar[str] = "train.stabiliser"
    packages: ClassVar[tuple[str, ...]] = ("zclip", "pytorch_optimizer")
    default_num_threads: ClassVar[int | None] = 1
    supports_distributed: ClassVar[bool] = True
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    instability: InstabilityConfig = InstabilityConfig()
    monitor: MonitorConfig = MonitorConfig()
    events: EventsConfig = EventsConfig()
    branch: BranchConfig = BranchConfig()

    def distributed_refusal(self) -> str | None:
        if self.branch.enabled:
            return ("branch.enabled rolls futures back and forth on one process's state; "
                    "run branching with one process (drop --nproc) or set branch.enabled=false")
        return None

    @property
    def method_tag(self) -> str:
        """The stabiliser, or the branching ablation (branch_rules, branch_proxy,
        branch_proxy_verify; ``_loss`` with the single-signal trigger) when branching is on."""
        if not self.branch.enabled:
            return self.train.stabiliser
        return f"branch_{self.branch.mode}" + ("_loss" if self.branch.signal == "loss" else "")


__all__ = ["Config", "DataConfig", "ModelConfig", "TrainConfig", "InstabilityConfig", "MonitorConfig",
           "EventsConfig", "BranchConfig", "ActionConfig", "STABILISERS"]
