"""The anomaly task's optional parts, each reported as success, disabled (with the reason and
the key that turns it on) or failed: the model, early stopping, the heat-map figure."""
from __future__ import annotations

from types import SimpleNamespace

from tracking import ComponentResult, Components, Gate

COMPONENTS = Components()


def _memory_bank(cfg) -> bool:
    from projects.anomaly.factory import spec_for

    return spec_for(cfg).memory_bank


MEMORY_BANK = Gate(_memory_bank,
                   "a memory-bank model: one pass over the normal images builds it, there is no loss "
                   "to watch", "use a trained model type (draem, fastflow, dinomaly)")


@COMPONENTS.provider("model")
def _model(ctx: SimpleNamespace) -> ComponentResult:
    n = sum(p.numel() for p in ctx.model.parameters())
    data = {"model_type": ctx.cfg.model.model_type, "parameters": n, "memory_bank": ctx.spec.memory_bank,
            **ctx.cfg.model.params().model_dump(mode="json")}
    if ctx.cfg.model.model_type == "dinomaly" and ctx.cfg.model.dinomaly.encoder_init == "random":
        data["encoder"] = RANDOM_ENCODER
    return ComponentResult.success(data)


RANDOM_ENCODER = ("random init: the DINOv2 architecture with random weights, NOT the published "
                  "DINOv2 encoder (its scores say nothing about Dinomaly's published ones)")


@COMPONENTS.provider("training.early_stopping", gates=(
        MEMORY_BANK, Gate(lambda cfg: cfg.train.early_stopping_patience == 0,
                          "train.early_stopping_patience is 0", "--set train.early_stopping_patience=3")))
def _early_stopping(ctx: SimpleNamespace) -> ComponentResult:
    from lightning.pytorch.callbacks import EarlyStopping

    stopper = next(c for c in ctx.engine.trainer.callbacks if isinstance(c, EarlyStopping))
    best = float(stopper.best_score)
    return ComponentResult.success({"monitor": "loss.total.val (val_loss)", "stopped_epoch": int(stopper.stopped_epoch),
                                    "best_val_loss": best, "patience": stopper.patience,
                                    "epochs_trained": int(ctx.engine.trainer.current_epoch)})


@COMPONENTS.provider("figures.heatmaps", enabled_by="figures.heatmaps", why="it draws a figure")
def _heatmaps(ctx: SimpleNamespace) -> ComponentResult:
    from projects.anomaly.figures import heatmap_figure

    title = (f"{ctx.cfg.model.model_type}: train {ctx.data.source.name}, test {ctx.data.target.name}, "
             f"image AUROC {ctx.scores.get('image_AUROC', float('nan')):.3f}")
    fig = heatmap_figure(ctx.model, ctx.test_dm.test_data, ctx.cfg.figures.n_examples, title)
    return ComponentResult.success({"examples": ctx.cfg.figures.n_examples},
                                   figures=[ctx.run.log_figure(fig, "heatmaps.png")])
