"""The Lightning bridge on a tiny LightningModule: it logs, checkpoints, resumes and fails
like any run. Not anomalib: the bridge must work for any Lightning project.

The file is also the task that the subprocess tests run (``python tests/test_lightning_bridge.py``).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import pytest

if __name__ == "__main__":  # run as the task: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tracking import Section, TaskConfig, execution, load_config, start_run
from tracking.lightning import metric_name

pytest.importorskip("lightning")


class TinyTrain(Section):
    max_epochs: int = 6
    lr: float = 0.05
    patience: int = 50
    sleep_s: float = execution(0.0)
    fail_at_epoch: int | None = None
    interrupt_at_epoch: int | None = None
    """Raise KeyboardInterrupt inside training_step: what Ctrl-C does, without a signal."""


class Config(TaskConfig):
    task: ClassVar[str] = "tiny_lightning"
    train: TinyTrain = TinyTrain()


def _module(cfg: Config):
    import lightning.pytorch as pl
    import torch

    class Tiny(pl.LightningModule):
        """Dropout and a shuffled loader: a resume must restore RNGs to match exactly."""

        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Dropout(0.2),
                                           torch.nn.Tanh(), torch.nn.Linear(16, 1))

        def training_step(self, batch, idx):
            if cfg.train.fail_at_epoch == self.current_epoch:
                raise RuntimeError(f"injected failure at epoch {self.current_epoch}")
            if cfg.train.interrupt_at_epoch == self.current_epoch:
                raise KeyboardInterrupt
            if cfg.train.sleep_s:
                time.sleep(cfg.train.sleep_s)
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x), y)
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            return loss

        def validation_step(self, batch, idx):
            x, y = batch
            pred = self.net(x)
            self.log("val_loss", torch.nn.functional.mse_loss(pred, y))
            self.log("val/mae", (pred - y).abs().mean())

        def configure_optimizers(self):
            opt = torch.optim.Adam(self.parameters(), lr=cfg.train.lr)
            return [opt], [torch.optim.lr_scheduler.StepLR(opt, 2, 0.5)]

    return Tiny()


def _loaders():
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 4, generator=g)
    y = x @ torch.randn(4, 1, generator=g)
    return (DataLoader(TensorDataset(x[:64], y[:64]), batch_size=16, shuffle=True),
            DataLoader(TensorDataset(x[64:], y[64:]), batch_size=32))


def main(argv=None):
    cfg = load_config(Config, argv)
    import lightning.pytorch as pl

    from tracking.lightning import LightningBridge

    with start_run(cfg) as run:
        bridge = LightningBridge(run, every_n_epochs=1)
        train, val = _loaders()
        trainer = pl.Trainer(max_epochs=cfg.train.max_epochs, accelerator="cpu", logger=bridge.logger,
                             callbacks=[bridge.callback, pl.callbacks.EarlyStopping("val_loss", patience=cfg.train.patience)],
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, log_every_n_steps=1, deterministic=True)
        with bridge.guard():
            trainer.fit(_module(cfg), train, val, ckpt_path=bridge.resume_path)
        run.results["epochs"] = trainer.current_epoch


# --------------------------------------------------------------------------- tests

HERE = Path(__file__).resolve()


def _history(client, run_id, name):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, name), key=lambda m: m.step)]


def _runs(client):
    exp = client.get_experiment_by_name("tiny_lightning")
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"]) if exp else []


@pytest.mark.parametrize("key, stage, name", [
    ("train_loss", "train", "loss.total.train"),
    ("train_loss_epoch", "train", "loss.total.train.epoch"),
    ("train_loss_step", "train", "loss.total.train"),
    ("val_loss", "train", "loss.total.val"),
    ("val/recon_loss", None, "loss.recon.val"),
    ("image_AUROC", "test", "metric.image_auroc.test"),
    ("pixel_AUPRO", "test", "metric.pixel_aupro.test"),
    ("diag.lr", "train", "diag.lr"),
    ("Accuracy", None, "metric.accuracy.fit"),
])
def test_metric_names_are_hierarchical(key, stage, name):
    assert metric_name(key, stage) == name


def test_bridge_logs_and_checkpoints_a_finished_run(store):
    main(["--set", "train.max_epochs=3"])
    (run,) = _runs(store)
    assert run.info.status == "FINISHED"
    names = set(run.data.metrics)
    assert {"loss.total.train", "loss.total.train.epoch", "loss.total.val", "metric.mae.val"} <= names
    assert len(_history(store, run.info.run_id, "loss.total.val")) == 3
    assert len(_history(store, run.info.run_id, "loss.total.train")) == 12  # 4 batches x 3 epochs
    cps = [a.path for a in store.list_artifacts(run.info.run_id, "checkpoints")]
    assert cps == ["checkpoints/cp_12.ptz"] or set(cps) == {"checkpoints/cp_8.ptz", "checkpoints/cp_12.ptz"}
    summary = json.loads(Path(store.download_artifacts(run.info.run_id, "summary.json")).read_text())
    assert summary["results"]["epochs"] == 3


def test_failure_inside_lightning_ends_the_run_failed(store):
    with pytest.raises(RuntimeError, match="injected failure at epoch 1"):
        main(["--set", "train.fail_at_epoch=1"])
    (run,) = _runs(store)
    assert run.info.status == "FAILED"
    assert run.data.tags["labrun.failure"] == "RuntimeError: injected failure at epoch 1"
    assert run.data.tags["labrun.status"] == "failed"


def test_interrupt_is_killed_and_resume_matches_an_uninterrupted_run(store):
    main(["--set", "train.max_epochs=5"])
    with pytest.raises(SystemExit) as stop:  # Lightning's sys.exit(1) is undone by bridge.guard
        main(["--set", "train.max_epochs=5", "--set", "train.interrupt_at_epoch=3"])
    assert stop.value.code == 130
    full, killed = _runs(store)
    assert killed.info.status == "KILLED"
    assert killed.data.tags["labrun.failure"] == "Interrupted: KeyboardInterrupt"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    main(["--resume", killed.info.run_id, "--set", "train.interrupt_at_epoch=null"])
    resumed = _runs(store)[-1]
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags["labrun.resumed_from"] == killed.info.run_id
    for name in ("loss.total.val", "loss.total.train"):
        assert _history(store, resumed.info.run_id, name) == _history(store, full.info.run_id, name), name


def test_an_early_stop_is_checkpointed_and_a_resume_trains_no_further(store):
    main(["--set", "train.lr=0", "--set", "train.patience=1", "--set", "train.max_epochs=6"])
    (stopped,) = _runs(store)
    assert len(_history(store, stopped.info.run_id, "loss.total.val")) == 2  # epoch 2 did not improve
    main(["--resume", stopped.info.run_id])
    resumed = _runs(store)[-1]
    assert resumed.info.status == "FINISHED"
    assert _history(store, resumed.info.run_id, "loss.total.val") == \
        _history(store, stopped.info.run_id, "loss.total.val")


@pytest.mark.slow
def test_sigterm_in_a_real_process_is_killed_then_resumes(store, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": store.uri}
    cmd = [sys.executable, str(HERE), "--set", "train.max_epochs=20", "--set", "train.sleep_s=0.1"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 300
    run_id = None
    while time.time() < deadline and run_id is None:
        time.sleep(0.5)
        runs = _runs(store)
        if runs and store.list_artifacts(runs[0].info.run_id, "checkpoints"):
            run_id = runs[0].info.run_id
    assert run_id, "no checkpoint appeared"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    killed = store.get_run(run_id)
    assert killed.info.status == "KILLED"
    assert killed.data.tags["labrun.failure"] == "Interrupted: signal SIGTERM"
    done = subprocess.run([sys.executable, str(HERE), "--resume", run_id, "--set", "train.sleep_s=0"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = _runs(store)[-1]
    steps = [s for s, _ in _history(store, resumed.info.run_id, "loss.total.val")]
    assert len(steps) == 20 and steps == sorted(set(steps))  # the killed epochs plus the rest, once each


if __name__ == "__main__":
    main()
