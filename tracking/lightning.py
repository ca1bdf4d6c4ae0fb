"""Bridge from a Lightning ``Trainer`` to the run contract, for any ``LightningModule``.

Lightning owns the loop, so ``run.steps`` cannot; the bridge hands the contract's four jobs
to Lightning's own extension points instead:

- metrics: a Lightning ``Logger`` turns ``self.log("val_loss")`` into ``loss.total.val``,
  ``image_AUROC`` logged while testing into ``metric.image_auroc.test``, and so on
  (:func:`metric_name`), batched through ``run.log_metrics``;
- checkpoints: a ``Callback`` writes ``trainer.save_checkpoint``'s complete Lightning
  checkpoint (weights, optimizers, schedulers, loop progress, callback states such as early
  stopping) into the platform's ``checkpoints/cp_<step>.ptz`` at the end of every
  ``every_n_epochs``-th epoch, the last one and after an early stop (a resumed stopped fit
  trains no further), so ``--resume RUN_ID`` works
  as for any task; with the RNGs seeded per epoch a resumed fit repeats the uninterrupted
  one's metrics exactly on the CPU;
- resume: :attr:`LightningBridge.resume_path` is that checkpoint written back as a ``.ckpt``
  file for ``trainer.fit(..., ckpt_path=...)``;
- outcome: Lightning answers Ctrl-C and SIGTERM with ``sys.exit(1)``, which a run would
  record as FAILED; :meth:`LightningBridge.guard` turns that back into the interruption, so
  the run ends KILLED (exit 130/143) and keeps its checkpoints; any other error ends it
  FAILED with Lightning's exception.

``lightning`` (or the older ``pytorch_lightning``) is imported only when the bridge's
classes are first used: ``import tracking`` never pulls it in.
"""
from __future__ import annotations

import functools
import random
import re
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from tracking.metrics import NAMESPACES, higher_is_better

if TYPE_CHECKING:
    from tracking.run import Run

STAGE_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val",
               "validation": "val", "test": "test", "predict": "predict"}
_IGNORED = {"epoch"}  # Lightning adds it to every dict it logs; the step already says it


def metric_name(key: str, stage: str | None = None) -> str:
    """Lightning's flat key -> a hierarchical platform name.

    ``train_loss`` -> ``loss.total.train``; ``val/recon_loss`` -> ``loss.recon.val``;
    ``image_AUROC`` while testing -> ``metric.image_auroc.test``; ``train_loss_epoch`` ->
    ``loss.total.train.epoch`` (Lightning's ``on_step`` and ``on_epoch`` copies of one value
    stay apart). A stage word in the key wins over the trainer's stage; names already under a
    platform namespace (``diag.lr``) pass unchanged.
    """
    low = key.strip().lower()
    if low.split(".", 1)[0] in NAMESPACES and "." in low:
        return re.sub(r"[^a-z0-9_.\-]", "_", low)
    words = [w for w in re.split(r"[/._\-\s]+", low) if w]
    found = next((w for w in words if w in STAGE_WORDS), None)
    if found is not None:
        words.remove(found)
        stage = STAGE_WORDS[found]
    agg = ""
    if len(words) > 1 and words[-1] in ("step", "epoch"):
        agg = words.pop()
    family = "loss" if "loss" in words else "metric"
    if family == "loss":
        words.remove("loss")
    name = re.sub(r"[^a-z0-9_]", "_", "_".join(words)) or ("total" if family == "loss" else "value")
    parts = [family, name, stage or "fit"] + (["epoch"] if agg == "epoch" else [])
    return ".".join(parts)


@functools.cache
def _pl() -> Any:
    """The Lightning package in use: ``lightning.pytorch``, else ``pytorch_lightning``."""
    try:
        import lightning.pytorch as pl
    except ImportError:  # pragma: no cover - the older distribution
        import pytorch_lightning as pl
    return pl


# --------------------------------------------------------------------------- state

class _LightningState:
    """What the platform checkpoint holds for Lightning: the ``.ckpt`` file's bytes.

    Bytes rather than Lightning's dict: ``trainer.save_checkpoint`` is Lightning's public way
    to write everything a resume needs (strategy- and version-aware), and the platform file
    compresses and checksums the bytes like any other state.
    """

    def __init__(self, bridge: "LightningBridge") -> None:
        self.bridge = bridge
        self.restored: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        from tracking.checkpoint import allowlist

        trainer = self.bridge.trainer
        if trainer is None:
            return {"ckpt": None, "stopped": False}
        path = self.bridge.scratch / "save.ckpt"
        trainer.save_checkpoint(str(path))
        blob = path.read_bytes()
        path.unlink(missing_ok=True)
        if not allowlist.is_trusted():  # a resume must be able to read it back (register the rest)
            allowlist.scan_torch_bytes(blob, source="the Lightning checkpoint", saving=True)
        # Lightning keeps no record of an early stop in its checkpoint (should_stop is not saved)
        return {"ckpt": blob, "stopped": bool(getattr(trainer, "should_stop", False))}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Keep the ``.ckpt`` bytes for ``fit(ckpt_path=...)`` once the allow-list has read
        them: Lightning's own load unpickles without one."""
        from tracking.checkpoint import allowlist

        if state.get("ckpt"):
            allowlist.torch_load(state["ckpt"], source="the Lightning checkpoint in this run's checkpoint")
        self.restored = dict(state)


def _seed_all(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# --------------------------------------------------------------------------- bridge

class LightningBridge:
    """One run's connection to Lightning: pass :attr:`logger` and :attr:`callback` to the
    ``Trainer`` (or anomalib's ``Engine``), fit with ``ckpt_path=bridge.resume_path``, and
    call ``fit``/``test`` inside ``with bridge.guard():``.

    ``state`` adds objects of your own to the platform checkpoint (the bridge owns
    ``run.track_state``). ``every_n_epochs`` sets the checkpoint cadence; the last epoch and
    an early stop are always saved. ``names`` maps Lightning keys to platform names where
    :func:`metric_name`'s rule is not what you want. ``reseed`` seeds the RNGs from
    (seed, epoch) at each epoch's start, which is what makes a resumed fit exact.
    """

    def __init__(self, run: "Run", *, every_n_epochs: int = 1, names: Mapping[str, str] | None = None,
                 state: Mapping[str, Any] | None = None, reseed: bool = True) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.run = run
        self.every_n_epochs = every_n_epochs
        self.reseed = reseed
        self.names = dict(names or {})
        self.trainer: Any = None
        self.exception: BaseException | None = None
        self.scratch = Path(run.local_dir) / "lightning"
        self.scratch.mkdir(parents=True, exist_ok=True)
        self._state = _LightningState(self)
        self._known: dict[str, str] = {}
        self._saved_epoch = -1
        self._last_step = -1
        self.resume = run.track_state(lightning=self._state, **dict(state or {}))
        self.resume_path: str | None = self._write_resume_ckpt()
        self.stopped = bool((self._state.restored or {}).get("stopped"))
        """The resumed run had stopped early: the resumed fit trains no further."""
        self.logger = _classes().Logger(self)
        self.callback = _classes().Callback(self)

    def _write_resume_ckpt(self) -> str | None:
        blob = (self._state.restored or {}).get("ckpt")
        if not blob:
            return None
        path = self.scratch / "resume.ckpt"
        path.write_bytes(blob)
        self._saved_epoch = int(self.resume.epoch) if self.resume else -1
        self._last_step = int(self.resume.global_step) if self.resume else -1
        return str(path)

    # ------------------------------------------------------------------ metrics
    def translate(self, key: str) -> str:
        """Platform name of a Lightning key (cached: Lightning logs the same keys each step)."""
        if key in self.names:
            return self.names[key]
        stage = _stage_of(self.trainer)
        cache_key = f"{stage}|{key}"
        if cache_key not in self._known:
            name = metric_name(key, stage)
            if higher_is_better(name):
                self.run.set_direction(name, "max")
            self._known[cache_key] = name
        return self._known[cache_key]

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None) -> None:
        values = {}
        for key, value in metrics.items():
            if key in _IGNORED:
                continue
            v = float(value.item() if hasattr(value, "item") else value)
            values[self.translate(key)] = v
        if values:
            self.run.log_metrics(values, step=int(step if step is not None else self._step()))

    # ------------------------------------------------------------------ checkpoints
    def _step(self) -> int:
        return int(self.trainer.global_step) if self.trainer is not None else 0

    def save(self, epoch: int) -> None:
        """A platform checkpoint of the trainer as it is now (after this epoch's logging)."""
        step = max(self._step(), self._last_step + 1)
        self.run.save_checkpoint(step, epoch=epoch)
        self._saved_epoch, self._last_step = epoch, step

    def _seed_epoch(self, epoch: int) -> None:
        if self.reseed:
            _seed_all(self.run.cfg.seed * 100_003 + epoch)

    def fit_starting(self, trainer: Any) -> None:
        """Seed for the first epoch of this fit, resumed or not.

        Each epoch's RNGs come from (run seed, epoch), set before the epoch's data loader
        draws its order: in a fresh epoch 0, and in the first epoch of a resumed fit, Lightning
        builds that iterator before any epoch hook, so the seed is set here (before Lightning
        has restored its loops, hence the epoch from the platform checkpoint).
        """
        self._seed_epoch(int(self.resume.epoch) if self.resume_path and self.resume else 0)

    def epoch_ended(self, trainer: Any) -> None:
        """Checkpoint at Lightning's own resume point (``ModelCheckpoint``'s
        ``save_on_train_epoch_end``: validation and early stopping have seen the epoch), then
        seed the next epoch, whose iterator is built after this hook."""
        done = int(trainer.current_epoch) + 1  # epochs completed, this one included
        last = trainer.max_epochs is not None and 0 < trainer.max_epochs <= done
        if done % self.every_n_epochs == 0 or last or trainer.should_stop:
            self.save(done)
        self._seed_epoch(done)

    def train_starting(self, trainer: Any) -> None:
        if self.stopped:
            self.run.log.info("the resumed run had stopped early: nothing left to train")
            trainer.should_stop = True

    def train_ended(self, trainer: Any) -> None:
        """After an early stop, save once more: EarlyStopping decides after our epoch-end
        hook (Lightning runs monitoring callbacks last), so only now does the state say so."""
        if trainer.should_stop and not self.stopped:
            self.save(int(trainer.current_epoch))
            self.stopped = True

    # ------------------------------------------------------------------ outcome
    @contextmanager
    def guard(self) -> Iterator["LightningBridge"]:
        """Undo Lightning's ``sys.exit(1)`` on Ctrl-C / SIGTERM: re-raise the interruption,
        so ``start_run`` ends the run KILLED with its checkpoints, exit code 130 or 143."""
        from tracking.run import RunInterrupted

        pl = _pl()
        sigterm_exc = getattr(pl.utilities.exceptions, "SIGTERMException", ())
        try:
            yield self
        except SystemExit as exc:
            caught = self.exception
            if isinstance(caught, KeyboardInterrupt):
                raise caught.with_traceback(None) from None
            if sigterm_exc and isinstance(exc, sigterm_exc):
                raise RunInterrupted("signal SIGTERM") from None
            raise
        finally:
            if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # Lightning's shutdown leaves it
                signal.signal(signal.SIGINT, signal.default_int_handler)


def _stage_of(trainer: Any) -> str | None:
    stage = getattr(getattr(trainer, "state", None), "stage", None)
    value = getattr(stage, "value", None) or ""
    return {"train": "train", "validate": "val", "sanity_check": "val", "test": "test",
            "predict": "predict"}.get(str(value))


@functools.cache
def _classes() -> Any:
    """Lightning subclasses, defined on first use so that importing this module is free."""
    pl = _pl()
    from types import SimpleNamespace

    class LabrunLogger(pl.loggers.Logger):
        """Lightning's logged values -> ``run.log_metrics`` with hierarchical names."""

        def __init__(self, bridge: LightningBridge) -> None:
            super().__init__()
            self.bridge = bridge

        @property
        def name(self) -> str:
            return "labrun"

        @property
        def version(self) -> str:
            return self.bridge.run.run_id

        def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
            """The resolved config is already the run's params; Lightning's hparams go to
            ``summary.json`` results instead of clashing with them."""
            items = params if isinstance(params, Mapping) else vars(params)
            self.bridge.run.results["lightning_hparams"] = {k: str(v)[:200] for k, v in items.items()}

        def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
            self.bridge.log_metrics(metrics, step)

    class LabrunCallback(pl.Callback):
        """Platform checkpoints after each ``every_n_epochs`` epochs; remembers exceptions."""

        def __init__(self, bridge: LightningBridge) -> None:
            self.bridge = bridge

        def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
            self.bridge.trainer = trainer

        def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
            self.bridge.fit_starting(trainer)

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self.bridge.train_starting(trainer)

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            self.bridge.epoch_ended(trainer)

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self.bridge.train_ended(trainer)

        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
            self.bridge.exception = exception

    return SimpleNamespace(Logger=LabrunLogger, Callback=LabrunCallback)


def __getattr__(name: str) -> Any:
    """``from tracking.lightning import LabrunLogger`` imports Lightning at that moment."""
    if name in ("LabrunLogger", "LabrunCallback"):
        return getattr(_classes(), name.removeprefix("Labrun"))
    raise AttributeError(f"module 'tracking.lightning' has no attribute {name!r}")


__all__ = ["LightningBridge", "metric_name", "higher_is_better"]
