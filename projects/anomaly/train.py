"""Anomaly detection on anomalib: one trainer for every model type.

``model.model_type`` picks the model (:mod:`projects.anomaly.factory`); the data module,
paths, early stopping on the validation loss, checkpoints, metrics and results are the same
for all. anomalib's ``Engine`` (a Lightning trainer) fits and tests; the platform's Lightning
bridge (:mod:`tracking.lightning`) carries its logged values, checkpoints and outcome into
the run. Training and validation see normal images of the source domain only; the test set is
the target domain's (by default the same) normal and defective images with pixel masks.

    labrun run anomaly --config quick
    labrun run anomaly --set model.model_type=draem --set train.max_epochs=5
    labrun sweep projects/anomaly/conditions/base.json
"""
from __future__ import annotations

import os
import time
from types import SimpleNamespace
from typing import Any

from projects.anomaly.components import COMPONENTS
from projects.anomaly.config import Config
from tracking import ComponentResult, load_config, start_run
from tracking.config import exit_with_config_error

TEST_METRICS = ("metric.image_auroc.test", "metric.pixel_auroc.test", "metric.pixel_aupro.test")


def _spec(cfg: Config) -> Any:
    from projects.anomaly.factory import spec_for

    return spec_for(cfg)


def _callbacks(cfg: Config, spec: Any, bridge: Any) -> list[Any]:
    from anomalib.callbacks import ModelCheckpoint
    from lightning.pytorch.callbacks import EarlyStopping

    from projects.anomaly.validation import VAL_LOSS_KEY, validation_loss_callback

    # anomalib adds a ModelCheckpoint that writes files unless one is given: this one writes
    # nothing, the bridge saves the platform's checkpoints instead.
    callbacks = [bridge.callback, ModelCheckpoint(save_top_k=0, save_last=False)]
    loss = spec.validation_loss()
    if loss is not None:
        callbacks.append(validation_loss_callback(loss))
        if cfg.train.early_stopping_patience and not spec.memory_bank:
            callbacks.append(EarlyStopping(monitor=VAL_LOSS_KEY, mode="min",
                                           patience=cfg.train.early_stopping_patience))
    return callbacks


def _engine(run: Any, cfg: Config, spec: Any, bridge: Any) -> Any:
    from anomalib.engine import Engine

    from tracking.progress import bars_enabled

    return Engine(accelerator="gpu" if run.device.type == "cuda" else "cpu", devices=1,
                  max_epochs=1 if spec.memory_bank else cfg.train.max_epochs,
                  logger=bridge.logger, callbacks=_callbacks(cfg, spec, bridge),
                  default_root_dir=run.local_dir / "anomalib", log_every_n_steps=1,
                  enable_progress_bar=bars_enabled(), enable_model_summary=False)


def _fit_and_test(run: Any, cfg: Config, data: Any) -> SimpleNamespace:
    """Build, fit on the source domain, test on the target; the bridge records everything."""
    from projects.anomaly.datamodule import folder
    from projects.anomaly.factory import BuildContext, build_model
    from tracking.lightning import LightningBridge

    spec = _spec(cfg)
    model = build_model(cfg, BuildContext(cfg.data.image_size, cfg.train.learning_rate, data.anomaly_sources))
    bridge = LightningBridge(run, every_n_epochs=cfg.train.checkpoint_every_epochs)
    engine = _engine(run, cfg, spec, bridge)
    train_dm = folder(data.source, cfg)
    test_dm = folder(data.target, cfg) if data.cross_domain else train_dm
    with bridge.guard():
        t0 = time.time()
        engine.fit(model=model, datamodule=train_dm, ckpt_path=bridge.resume_path)
        train_s = time.time() - t0
        t0 = time.time()
        scores = (engine.test(model=model, datamodule=test_dm) or [{}])[0]
        test_s = time.time() - t0
    run.log_metrics({"perf.train_s": train_s, "perf.test_s": test_s}, step=engine.trainer.global_step)
    return SimpleNamespace(run=run, cfg=cfg, spec=spec, model=model, engine=engine, bridge=bridge,
                           test_dm=test_dm, data=data, scores=scores, train_s=train_s, test_s=test_s)


def _record(ctx: SimpleNamespace) -> None:
    run = ctx.run
    results = {k.lower(): float(v) for k, v in ctx.scores.items()}
    run.results.update({"scores": results, "train_s": ctx.train_s, "test_s": ctx.test_s,
                        "source": ctx.data.source.name, "target": ctx.data.target.name,
                        "cross_domain": ctx.data.cross_domain,
                        "epochs_trained": int(ctx.engine.trainer.current_epoch)})
    run.log.info("%s on %s -> %s: %s (train %.1f s, test %.1f s)", ctx.cfg.model.model_type,
                 ctx.data.source.name, ctx.data.target.name,
                 ", ".join(f"{k} {v:.3f}" for k, v in results.items()), ctx.train_s, ctx.test_s)


def main(argv: list[str] | None = None) -> None:
    cfg = load_config(Config, argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is ever fetched from the hub
    from projects.anomaly.datamodule import plan

    problem = _spec(cfg).config_error(cfg)
    if problem:
        exit_with_config_error(problem, cfg)
    try:
        data = plan(cfg)
    except ValueError as exc:
        exit_with_config_error(str(exc), cfg)
    blocked = _spec(cfg).unavailable(cfg.model.params())
    with start_run(cfg) as run:
        for name in TEST_METRICS:
            run.set_direction(name, "max")
        if blocked:
            run.component("model", ComponentResult.disabled(*blocked))
            run.log.warning("model %s disabled: %s", cfg.model.model_type, blocked[0])
            return
        if cfg.model.model_type == "dinomaly":
            run.set_tag("dinomaly.encoder", cfg.model.dinomaly.encoder_init)
        ctx = _fit_and_test(run, cfg, data)
        _record(ctx)
        run.report_components(COMPONENTS, ctx)
        _log_model(ctx)


def _log_model(ctx: SimpleNamespace) -> None:
    """The detector as an MLflow model (``--log-model``): pre-processing, model and the
    thresholds learnt while testing, without Lightning (:mod:`projects.anomaly.export`)."""
    from projects.anomaly.export import AnomalyScorer, input_example

    ctx.run.log_model(AnomalyScorer(ctx.model).eval(), input_example(ctx.test_dm.test_data))


if __name__ == "__main__":
    main()
