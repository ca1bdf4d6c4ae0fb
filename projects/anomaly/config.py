"""The anomaly task's config schema: data, training, and each model's own parameters.

Kept free of torch and anomalib so the ``labrun`` CLI and sweep expansion load it instantly.
``model.model_type`` picks the model; only that model's section (``model.patchcore``,
``model.draem``...) is used, and every section is typed, so a misspelt parameter exits 2
naming the valid ones. The group's experiment-conditions files use flat names
(``max_epochs``, ``source_domain``...); :meth:`Config.condition_key` maps them here.
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal, Mapping

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt

from tracking import Section, TaskConfig, execution
from tracking.schema import SEED_MAX

MODEL_TYPES = ("patchcore", "padim", "fastflow", "draem", "dinomaly")


class GeneratedConfig(Section):
    """The generated texture set (used when ``data.root`` is not given)."""

    size: PositiveInt = 128
    """Side of the written PNGs; the model sees them resized to data.image_size."""
    n_train: PositiveInt = 40
    """Normal training images per domain (a fraction is held out for validation)."""
    n_test_good: PositiveInt = 16
    n_per_defect: PositiveInt = 6
    """Test images per defect kind (scratch, spot, missing, blob) per domain; the subtle set
    shares the same total (4 x this) among the domain's own kinds."""
    seed: int = Field(0, ge=0, le=SEED_MAX)
    """Seed of the images themselves: the same set for every run seed."""
    defect_set: Literal["easy", "subtle"] = "easy"
    """easy: painted defects (scratch, spot, missing, blob) a per-pixel Gaussian already finds;
    subtle: displaced, rotated, pulled, refocused or colour-shifted texture that keeps each
    pixel's statistics (the floor near chance), severities 1-3. Same normal images in both."""


class DataConfig(Section):
    root: str | None = None
    """An MVTec-AD-style folder (ROOT/<category>/train/good, test/<defect>, ground_truth/<defect>);
    null: the generated textures, domains A-D."""
    source_domain: str = "A"
    """Category to train and validate on (A-D or domain_A.. for the generated set)."""
    target_domain: str | None = None
    """Category to test on (a cross-domain condition); null: the source domain."""
    image_size: PositiveInt = 64
    batch_size: PositiveInt = 8
    val_ratio: float = Field(0.2, gt=0, lt=1)
    """Fraction of the normal training images held out for validation (normal images only)."""
    generated: GeneratedConfig = GeneratedConfig()
    cache_dir: str = execution(".labrun/anomaly_data")
    """Where the generated set is written (once per generation settings)."""
    num_workers: NonNegativeInt = execution(0)


class TrainConfig(Section):
    max_epochs: PositiveInt = 10
    """Memory-bank models (patchcore, padim) need one epoch and use one whatever this says."""
    early_stopping_patience: NonNegativeInt = 3
    """Epochs without a lower validation loss before stopping; 0 turns early stopping off."""
    learning_rate: PositiveFloat | None = None
    """null: the model's published rate (draem 1e-4, fastflow 1e-3, dinomaly 2e-3)."""
    checkpoint_every_epochs: PositiveInt = execution(1)


class Backbone(Section):
    backbone: str = "resnet18"
    weights: str | None = None
    """A local file of backbone weights (timm/torchvision state dict); null: random init.
    Nothing is downloaded, so pretrained weights come only from such a file."""


class PatchcoreParams(Backbone):
    layers: list[str] = ["layer2", "layer3"]
    coreset_sampling_ratio: float = Field(0.02, gt=0, le=1)
    """Keep this small on the CPU: greedy coreset selection is quadratic-ish in the bank size."""
    num_neighbors: PositiveInt = 9


class PadimParams(Backbone):
    layers: list[str] = ["layer1", "layer2", "layer3"]
    n_features: PositiveInt | None = 100
    """Random feature subset (the paper's d); null: anomalib's default for the backbone."""


class FastflowParams(Backbone):
    flow_steps: PositiveInt = 4
    hidden_ratio: PositiveFloat = 1.0
    conv3x3_only: bool = False


class DraemParams(Section):
    dtd_dir: str | None = None
    """Folder of texture images for the synthetic anomalies; null: generated textures
    (anomalib would download the DTD set instead)."""
    enable_sspcab: bool = False
    """DRAEM+SSPCAB (self-supervised predictive convolutional attention block)."""
    sspcab_lambda: PositiveFloat = 0.1
    beta_low: float = Field(0.1, ge=0, le=1)
    beta_high: float = Field(1.0, ge=0, le=1)
    """Blend factor range of the synthetic anomalies."""
    base_width: PositiveInt = 128
    """Width of the reconstructive network (published 128; cost grows with its square)."""
    disc_base_width: PositiveInt = 64
    """Width of the discriminative network (published 64)."""


class DinomalyParams(Section):
    encoder_name: str = "vit_small_patch14_reg4_dinov2"
    encoder_init: Literal["dinov2_file", "random"] = "dinov2_file"
    """dinov2_file: the published DINOv2 encoder, from ``weights`` (disabled without it).
    random: the same timm ViT architecture with random weights, so the decoder, the loss and
    early stopping run without any download; NOT the published encoder (the model component
    and tag dinomaly.encoder say so), and its scores say nothing about DINOv2's."""
    weights: str | None = None
    """A local file of the DINOv2 encoder's weights (timm state dict, .safetensors or .pth).
    Without it (and with encoder_init dinov2_file) Dinomaly is reported disabled."""
    decoder_depth: PositiveInt = 8
    bottleneck_dropout: float = Field(0.2, ge=0, lt=1)


class ModelConfig(Section):
    model_type: Literal["patchcore", "padim", "fastflow", "draem", "dinomaly"] = "patchcore"
    patchcore: PatchcoreParams = PatchcoreParams()
    padim: PadimParams = PadimParams()
    fastflow: FastflowParams = FastflowParams()
    draem: DraemParams = DraemParams()
    dinomaly: DinomalyParams = DinomalyParams()

    def params(self) -> Section:
        """The chosen model's own section."""
        return getattr(self, self.model_type)


class FiguresConfig(Section):
    heatmaps: bool = True
    """A figure of test images, their masks and the model's anomaly maps."""
    n_examples: PositiveInt = 6


class Config(TaskConfig):
    task: ClassVar[str] = "anomaly"
    method_key: ClassVar[str] = "model.model_type"
    packages: ClassVar[tuple[str, ...]] = ("anomalib", "lightning", "timm", "torchmetrics")
    default_num_threads: ClassVar[int | None] = 2
    condition_keys: ClassVar[dict[str, str]] = {
        "model_type": "model.model_type", "source_domain": "data.source_domain",
        "target_domain": "data.target_domain", "data_root": "data.root",
        "image_size": "data.image_size", "batch_size": "data.batch_size",
        "max_epochs": "train.max_epochs", "early_stopping_patience": "train.early_stopping_patience",
        "learning_rate": "train.learning_rate", "defect_set": "data.generated.defect_set",
    }
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    model: ModelConfig = ModelConfig()
    figures: FiguresConfig = FiguresConfig()

    @classmethod
    def condition_key(cls, key: str, condition: Mapping[str, Any]) -> str:
        """A flat key of an experiment-conditions entry -> this schema's dotted key.

        The group's names map through :attr:`condition_keys`; any other bare name is a
        parameter of the condition's model (``coreset_sampling_ratio`` with
        ``model_type: patchcore`` is ``model.patchcore.coreset_sampling_ratio``); dotted keys
        are taken as they are. An unknown name is then reported by the schema itself.
        """
        if key in cls.condition_keys:
            return cls.condition_keys[key]
        if "." in key or key in cls.model_fields:
            return key
        model_type = condition.get("model_type", ModelConfig().model_type)
        return f"model.{model_type}.{key}"
