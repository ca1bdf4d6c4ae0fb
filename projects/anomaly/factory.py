"""The model factory: ``model.model_type`` -> an anomalib model, built offline.

One :class:`ModelSpec` per model type says how to build it from its typed parameters, whether
it can be built here at all (:meth:`ModelSpec.unavailable`: Dinomaly without local DINOv2
weights cannot, and says how to enable it), whether it is a memory-bank model (one epoch,
nothing for early stopping to watch) and which validation loss early stopping watches.
Adding a model is one subclass and one :data:`SPECS` entry, plus its section in the config.

Nothing here downloads: backbones are built with ``pre_trained=False`` and get pretrained
weights only from a local file (``weights: PATH``); DRAEM's anomaly textures come from a
local folder (the generated ones by default), never the DTD download.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator

from projects.anomaly.config import Config, DinomalyParams, DraemParams, FastflowParams, PadimParams, \
    PatchcoreParams
from projects.anomaly.validation import (DinomalyValidationLoss, DraemValidationLoss,
                                         FastflowValidationLoss, ValidationLoss)
from tracking.checkpoint import register_safe_globals

DEFAULT_LR = {"draem": 1e-4, "fastflow": 1e-3, "dinomaly": 2e-3}


@dataclass
class BuildContext:
    """What every model needs besides its own parameters."""

    image_size: int
    learning_rate: float | None
    dtd_dir: Path | None = None
    """Folder of texture images for DRAEM's synthetic anomalies."""
    aupro: bool = True
    """Also compute pixel AUPRO (slow on the CPU: connected components at many thresholds)."""


class ModelSpec(ABC):
    """How one model type is built and trained."""

    name: ClassVar[str]
    memory_bank: ClassVar[bool] = False
    """One pass over the normal images builds the model: max_epochs 1, no early stopping."""

    @abstractmethod
    def build(self, params: Any, ctx: BuildContext) -> Any:
        """The anomalib module (an ``AnomalibModule``, hence a ``LightningModule``)."""

    def unavailable(self, params: Any) -> tuple[str, str] | None:
        """(reason, how to enable) when this model cannot be built here, else None."""
        return None

    def validation_loss(self) -> ValidationLoss | None:
        return None

    def config_error(self, cfg: Config) -> str | None:
        """A setting this model cannot take, found before any run exists (exit 2)."""
        return None


def _evaluator(aupro: bool) -> Any:
    """Test metrics: image AUROC, pixel AUROC and pixel AUPRO (validation has no anomalies)."""
    from anomalib.metrics import AUPRO, AUROC, Evaluator

    metrics = [AUROC(fields=["pred_score", "gt_label"], prefix="image_"),
               AUROC(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False)]
    if aupro:
        metrics.append(AUPRO(fields=["anomaly_map", "gt_mask"], prefix="pixel_", strict=False))
    return Evaluator(test_metrics=metrics)


def _common(cls: Any, ctx: BuildContext, **pre: Any) -> dict[str, Any]:
    """The model's own pre-processing at the configured size, our metrics, no visualizer
    (the task draws its own heat maps instead of writing image files per test batch)."""
    size = (ctx.image_size, ctx.image_size)
    return {"pre_processor": cls.configure_pre_processor(image_size=size, **pre),
            "evaluator": _evaluator(ctx.aupro), "visualizer": False}


def load_weights(module: Any, path: str, what: str) -> None:
    """A local state dict (``.safetensors`` or a torch file) into ``module``; a file that fits
    less than half of the module's tensors is an error rather than a silent random init."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{what}: weights file {path!r} not found")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(p))
    else:
        state = torch.load(str(p), map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = module.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(fitting) < len(own) / 2:
        raise ValueError(f"{what}: weights file {path!r} fits {len(fitting)} of {len(own)} tensors; "
                         f"is it the state dict of this backbone?")
    module.load_state_dict(fitting, strict=False)


class PatchcoreSpec(ModelSpec):
    name = "patchcore"
    memory_bank = True

    def build(self, params: PatchcoreParams, ctx: BuildContext) -> Any:
        from anomalib import PrecisionType
        from anomalib.models import Patchcore

        register_safe_globals(PrecisionType)  # its hparam `precision`, in the Lightning checkpoint
        model = Patchcore(backbone=params.backbone, layers=list(params.layers), pre_trained=False,
                          coreset_sampling_ratio=params.coreset_sampling_ratio,
                          num_neighbors=params.num_neighbors, **_common(Patchcore, ctx))
        if params.weights:
            load_weights(model.model.feature_extractor.feature_extractor, params.weights, "patchcore")
        return model


class PadimSpec(ModelSpec):
    name = "padim"
    memory_bank = True

    def build(self, params: PadimParams, ctx: BuildContext) -> Any:
        from anomalib.models import Padim

        model = Padim(backbone=params.backbone, layers=list(params.layers), pre_trained=False,
                      n_features=params.n_features, **_common(Padim, ctx))
        if params.weights:
            load_weights(model.model.feature_extractor.feature_extractor, params.weights, "padim")
        return model


class FastflowSpec(ModelSpec):
    name = "fastflow"

    def build(self, params: FastflowParams, ctx: BuildContext) -> Any:
        from anomalib.models import Fastflow
        from torch import optim

        lr = ctx.learning_rate or DEFAULT_LR[self.name]

        class LabrunFastflow(Fastflow):
            """FastFlow with the configured learning rate (anomalib fixes 1e-3)."""

            def configure_optimizers(self) -> Any:
                return optim.Adam(self.model.parameters(), lr=lr, weight_decay=1e-5)

        model = LabrunFastflow(backbone=params.backbone, pre_trained=False, flow_steps=params.flow_steps,
                               conv3x3_only=params.conv3x3_only, hidden_ratio=params.hidden_ratio,
                               **_common(Fastflow, ctx))
        if params.weights:
            load_weights(model.model.feature_extractor, params.weights, "fastflow")
        return model

    def validation_loss(self) -> ValidationLoss:
        return FastflowValidationLoss()


class DraemSpec(ModelSpec):
    name = "draem"

    def build(self, params: DraemParams, ctx: BuildContext) -> Any:
        from anomalib.models import Draem
        from torch import optim

        dtd = Path(params.dtd_dir) if params.dtd_dir else ctx.dtd_dir
        if dtd is None or not dtd.is_dir():  # anomalib would download DTD: never
            raise ValueError(f"draem: anomaly texture folder {str(dtd)!r} is not a folder of images; "
                             f"set model.draem.dtd_dir or leave it null for the generated textures")
        lr = ctx.learning_rate or DEFAULT_LR[self.name]

        class LabrunDraem(Draem):
            """DRAEM with the configured learning rate (anomalib fixes 1e-4)."""

            def configure_optimizers(self) -> Any:
                opt = optim.Adam(self.model.parameters(), lr=lr)
                return [opt], [optim.lr_scheduler.MultiStepLR(opt, milestones=[400, 600], gamma=0.1)]

        model = LabrunDraem(dtd_dir=dtd, enable_sspcab=params.enable_sspcab,
                            sspcab_lambda=params.sspcab_lambda, beta=(params.beta_low, params.beta_high),
                            **_common(Draem, ctx))
        if (params.base_width, params.disc_base_width) != (128, 64):
            _resize_draem(model, params)
        return model

    def validation_loss(self) -> ValidationLoss:
        return DraemValidationLoss()


def _resize_draem(model: Any, params: DraemParams) -> None:
    """Narrower sub-networks (anomalib builds the published widths only): the CPU-scale variant."""
    from anomalib.models.image.draem.torch_model import DiscriminativeSubNetwork, ReconstructiveSubNetwork

    model.model.reconstructive_subnetwork = ReconstructiveSubNetwork(base_width=params.base_width,
                                                                     sspcab=params.enable_sspcab)
    model.model.discriminative_subnetwork = DiscriminativeSubNetwork(in_channels=6, out_channels=2,
                                                                     base_width=params.disc_base_width)
    if params.enable_sspcab:
        model.setup_sspcab()  # its hooks sit on the reconstructive encoder just replaced


class DinomalySpec(ModelSpec):
    name = "dinomaly"

    def unavailable(self, params: DinomalyParams) -> tuple[str, str] | None:
        if params.encoder_init == "random" or (params.weights and Path(params.weights).is_file()):
            return None
        why = (f"weights file {params.weights!r} not found" if params.weights else
               "no local weights file given")
        return (f"Dinomaly's encoder ({params.encoder_name}) only works with pretrained DINOv2 weights, "
                f"which anomalib fetches from the Hugging Face hub, and nothing is downloaded here ({why})",
                f"save the encoder's weights where the hub is reachable (timm.create_model("
                f"'{params.encoder_name}', pretrained=True).state_dict() to a .safetensors or .pth file) "
                f"and set model.dinomaly.weights=/path/to/that/file; or, to exercise the architecture "
                f"without them, model.dinomaly.encoder_init=random (not the published encoder)")

    def config_error(self, cfg: Config) -> str | None:
        params = cfg.model.dinomaly
        if params.encoder_init == "random" and params.weights:
            return (f"model.dinomaly.weights ({params.weights!r}) is set but model.dinomaly.encoder_init is "
                    f"random; drop one of them")
        if cfg.data.image_size % 14:
            return (f"dinomaly needs data.image_size to be a multiple of its ViT patch size 14 "
                    f"(e.g. 56, 112, 224), got {cfg.data.image_size}")
        return None

    def build(self, params: DinomalyParams, ctx: BuildContext) -> Any:
        from anomalib.models import Dinomaly

        with _timm_without_download():
            model = Dinomaly(encoder_name=params.encoder_name, decoder_depth=params.decoder_depth,
                             bottleneck_dropout=params.bottleneck_dropout,
                             **_common(Dinomaly, ctx, crop_size=ctx.image_size))
        if params.encoder_init == "dinov2_file":
            load_weights(model.model.encoder.feature_extractor, params.weights, "dinomaly")
        return model

    def validation_loss(self) -> ValidationLoss:
        return DinomalyValidationLoss()


@contextmanager
def _timm_without_download() -> Iterator[None]:
    """anomalib's Dinomaly asks timm for ``pretrained=True`` with no way to pass a file; build
    the architecture with random weights instead (the local file, if any, is loaded right after), and
    keep the Hugging Face hub offline so any other attempt fails at once instead of fetching."""
    import anomalib.models.components.feature_extractors.timm as fx

    original = fx.timm.create_model

    def create_model(*args: Any, **kwargs: Any) -> Any:
        kwargs["pretrained"] = False
        return original(*args, **kwargs)

    old_env = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    fx.timm.create_model = create_model
    try:
        yield
    finally:
        fx.timm.create_model = original
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env


SPECS: dict[str, ModelSpec] = {s.name: s for s in (PatchcoreSpec(), PadimSpec(), FastflowSpec(),
                                                    DraemSpec(), DinomalySpec())}


def spec_for(cfg: Config) -> ModelSpec:
    return SPECS[cfg.model.model_type]


def build_model(cfg: Config, ctx: BuildContext) -> Any:
    """The configured model, or ValueError saying why it cannot be built here."""
    spec = spec_for(cfg)
    params = cfg.model.params()
    blocked = spec.unavailable(params)
    if blocked:
        raise ValueError(f"{spec.name} is unavailable: {blocked[0]}; to enable: {blocked[1]}")
    return spec.build(params, ctx)
