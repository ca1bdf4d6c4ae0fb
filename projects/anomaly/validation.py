"""Validation loss for models whose anomalib ``validation_step`` computes none.

Validation here sees only normal images, so AUROC cannot be measured on it and early
stopping watches a loss instead. anomalib's validation steps return predictions, not a loss;
each :class:`ValidationLoss` recomputes the model's own training objective on the validation
images (DRAEM: reconstruction + SSIM + focal loss on synthetic anomalies; FastFlow: the flow's
negative log-likelihood; Dinomaly: its feature-reconstruction loss), and
:func:`validation_loss_callback` logs the epoch mean as ``val_loss`` for ``EarlyStopping``.

The model's *top-level* ``training`` flag selects the training branch of ``forward`` while
its submodules stay in eval mode (no dropout, batch-norm statistics untouched).
"""
from __future__ import annotations

import random
from abc import ABC, abstractmethod
from contextlib import contextmanager
from typing import Any, Iterator

VAL_LOSS_KEY = "val_loss"


class ValidationLoss(ABC):
    """The training objective of one model type, evaluated on a validation batch."""

    @abstractmethod
    def batch_loss(self, module: Any, images: Any, batch_idx: int) -> Any:
        """Scalar loss tensor for ``images`` (already pre-processed by anomalib)."""


@contextmanager
def training_branch(model: Any) -> Iterator[None]:
    """Run ``model.forward``'s training branch without putting submodules in train mode."""
    was = model.training
    model.training = True
    try:
        yield
    finally:
        model.training = was


@contextmanager
def fixed_rng(seed: int) -> Iterator[None]:
    """The same synthetic anomalies every epoch, and the training RNG streams untouched."""
    import numpy as np
    import torch

    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


class DraemValidationLoss(ValidationLoss):
    """DRAEM's loss (L2 + 2 x SSIM reconstruction + focal segmentation) on validation images
    with synthetic anomalies drawn from a fixed seed per batch."""

    def batch_loss(self, module: Any, images: Any, batch_idx: int) -> Any:
        with fixed_rng(10_007 + batch_idx):
            augmented, mask = module.augmenter(images)
        with training_branch(module.model):
            reconstruction, prediction = module.model(augmented)
        return module.loss(images, reconstruction, mask, prediction)


class FastflowValidationLoss(ValidationLoss):
    """FastFlow's negative log-likelihood of the validation images' features."""

    def batch_loss(self, module: Any, images: Any, batch_idx: int) -> Any:
        with training_branch(module.model):
            hidden, jacobians = module.model(images)
        return module.loss(hidden, jacobians)


class DinomalyValidationLoss(ValidationLoss):
    """Dinomaly's encoder-decoder feature loss (its forward returns it in training mode).

    Computed with gradients on: the loss registers a gradient hook on the decoder's features
    (its hard mining), which fails under the callback's ``no_grad``; nothing is stepped."""

    def batch_loss(self, module: Any, images: Any, batch_idx: int) -> Any:
        import torch

        with training_branch(module.model), torch.enable_grad():
            return module.model(images, global_step=module.global_step).detach()


def validation_loss_callback(loss: ValidationLoss) -> Any:
    """A Lightning callback that logs the mean ``loss`` over the validation batches."""
    import lightning.pytorch as pl
    import torch

    class ValidationLossCallback(pl.Callback):
        def __init__(self) -> None:
            self.total, self.count = 0.0, 0

        def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self.total, self.count = 0.0, 0

        def on_validation_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                                    batch_idx: int, dataloader_idx: int = 0) -> None:
            with torch.no_grad():
                value = loss.batch_loss(pl_module, batch.image, batch_idx)
            n = int(batch.image.shape[0])
            self.total += float(value) * n
            self.count += n

        def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if self.count and not trainer.sanity_checking:
                pl_module.log(VAL_LOSS_KEY, self.total / self.count, on_epoch=True, logger=True)

    return ValidationLossCallback()
