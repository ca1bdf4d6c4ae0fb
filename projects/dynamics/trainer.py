"""The observed system as an object: build it from a config, call ``step()``, checkpoint it.

The entry point (``train.py``) drives a :class:`Trainer` through ``run.steps``; a branch
orchestrator can drive the same object without a run::

    t = Trainer(cfg)                      # or Trainer.from_checkpoint(cfg, "cp_400.ptz")
    snap = t.snapshot()                   # the full state, in memory
    for _ in range(50): t.step()          # one future
    t.restore(snap)                       # back to the branch point, RNGs included

``objects()`` is exactly what ``run.track_state`` checkpoints (the schema is in README.md).
"""
from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch.nn import functional as F

from tracking import TrainerState

from projects.dynamics.config import Config


class DynamicsState(TrainerState):
    """The trainer's own counters and the histories the figure and the cost report need."""

    def __init__(self) -> None:
        self.step = 0
        self.tokens = 0
        self.skipped = 0
        self.losses: list[float] = []
        self.index: list[float] = []
        self.triggers: list[int] = []
        self.loss_triggers: list[int] = []
        self.val: list[tuple[int, float]] = []


class Trainer:
    """``run``: under ``--nproc N`` each rank draws its own batches, trains through DDP
    (``run.distribute``) and decides skips, events and triggers on the loss averaged over
    the ranks (``run.all_ranks``), so every rank takes the same branch of every decision."""

    def __init__(self, cfg: Config, device: str | torch.device = "cpu", run: Any = None) -> None:
        from projects.dynamics.baselines import build_clipper, build_optimizer
        from projects.dynamics.data import Corpus
        from projects.dynamics.events import EventDetector
        from projects.dynamics.model import GPT, flops_per_token
        from projects.dynamics.monitor import Monitor
        from projects.dynamics.schedule import lr_factor

        self.cfg, self.device = cfg, torch.device(device)
        d, m, t = cfg.data, cfg.model, cfg.train
        self.corpus = Corpus(d.source, d.tokens, d.context, d.val_fraction, d.max_chars)
        with torch.random.fork_rng(devices=[]):  # the same weights however the caller seeded
            torch.manual_seed(cfg.seed)
            self.model = GPT(self.corpus.vocab.size, d.context, m.layers, m.d_model, m.heads,
                             m.mlp_ratio, m.dropout).to(self.device)
        self.optimizer = build_optimizer(t, self.model.parameters())
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(t, cfg.instability))
        self.clipper = build_clipper(t)
        rank = run.rank if run is not None else 0
        self.net = run.distribute(self.model) if run is not None else self.model
        self._mean = run.all_ranks if run is not None and run.world_size > 1 else None
        self.sampler = torch.Generator().manual_seed(cfg.seed + 1_000_003 * rank)
        self.monitor = Monitor(cfg.monitor, cfg.seed) if cfg.monitor.enabled else None
        self.events = EventDetector.from_config(cfg.events)
        self.state = DynamicsState()
        self.flops_per_step = flops_per_token(self.model.n_params(), m.layers, d.context, m.d_model) \
            * t.batch_size * d.context
        self.monitor_s = 0.0
        from projects.dynamics.branch.actions import Knobs

        self.knobs = Knobs(t, self.optimizer)  # the branch action in force (neutral unless a branch set one)
        self._val = self.corpus.val_batches(t.batch_size, t.eval_batches)

    # ------------------------------------------------------------------ state
    def objects(self) -> dict[str, Any]:
        """What a checkpoint holds; pass to ``run.track_state(**trainer.objects())``."""
        objs = {"model": self.model, "optimizer": self.optimizer, "scheduler": self.scheduler,
                "sampler": self.sampler, "clipper": self.clipper, "events": self.events,
                "trainer": self.state}
        if self.monitor is not None:
            objs["monitor"] = self.monitor
        if self.cfg.branch.enabled:
            objs["knobs"] = self.knobs
        return objs

    def snapshot(self) -> dict:
        """The full state (RNGs included), deep-copied: ``state_dict`` tensors are live views
        of the weights and moments, and a branch point must not move with the branch."""
        import copy

        from tracking import checkpoint

        return copy.deepcopy(checkpoint.collect(self.objects(), global_step=self.state.step))

    def restore(self, state: dict) -> None:
        """Load ``state`` (a snapshot or a loaded checkpoint); the state itself is not consumed.

        A copy is applied: ``optimizer.load_state_dict`` keeps the given moment tensors as
        its own, so the next steps would otherwise update the snapshot in place and a second
        restore from it (the next branch from the same point) would start elsewhere."""
        import copy

        from tracking import checkpoint

        checkpoint.apply(copy.deepcopy(state), self.objects())

    @classmethod
    def from_checkpoint(cls, cfg: Config, path: str, device: str = "cpu") -> "Trainer":
        """A trainer at a checkpoint's step (a ``cp_<step>.ptz`` of a dynamics run)."""
        from tracking import checkpoint

        t = cls(cfg, device)
        t.restore(checkpoint.load(path))
        return t

    # ------------------------------------------------------------------ training
    def _noise(self, step: int) -> str | None:
        ins = self.cfg.instability
        noisy = step in ins.noisy_steps
        if ins.noise_prob > 0:
            noisy |= bool(torch.rand((), generator=self.sampler) < ins.noise_prob)
        return ins.noise if noisy else None

    def step(self) -> dict[str, float]:
        """One optimisation step (the next global step); returns its metrics."""
        t0 = time.perf_counter()
        cfg, st = self.cfg, self.state
        step = st.step + 1
        noise = self._noise(step)
        x, y = (v.to(self.device) for v in self.corpus.batch(cfg.train.batch_size, self.sampler, noise))
        every = cfg.train.activations_every
        keep = bool(every) and step % every == 0
        self.model.train()
        with self._autocast():
            logits = self.net(x, keep_layers=keep)
            loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        held = self.knobs.active(step)
        grad_norm = (self.knobs.clipper if held and self.knobs.clipper is not None else self.clipper)(self.model)
        value = float(loss.detach()) if self._mean is None else self._mean({"loss": float(loss.detach())})["loss"]
        lr = self.optimizer.param_groups[0]["lr"] * ((1.0 + self.knobs.action.lr) if held else 1.0)
        if not (math.isfinite(value) and math.isfinite(grad_norm)):
            st.skipped += 1  # a non-finite step would poison the weights for good: skip it, count it
        elif held and self.knobs.action.skip and self._off_band(value):
            self.knobs.skipped += 1
        elif held:
            self._held_step()
        else:
            self.optimizer.step()
        self.scheduler.step()
        st.step, st.tokens = step, st.tokens + x.numel()
        st.losses.append(value)
        metrics = {"loss.train": value, "diag.grad_norm": grad_norm, "diag.lr": lr,
                   "diag.noisy_batch": float(noise is not None), "diag.skipped_steps": float(st.skipped),
                   "dynamics.attention_entropy": self.model.attention_entropy(),
                   "dynamics.activation_entropy": self.model.activation_entropy()}
        if keep:
            metrics.update(self.model.layer_summaries())
        if self.cfg.branch.enabled:  # batch statistics for the branch proxy's state features
            metrics["diag.batch.unique"] = float(torch.unique(x).numel()) / self.corpus.vocab.size
        started, recovered = self.events(step, value)
        metrics["dynamics.event"], metrics["dynamics.recovered"] = float(started), float(recovered)
        metrics["perf.step_ms"] = (time.perf_counter() - t0) * 1e3
        metrics.update(self._observe(step, metrics))
        return metrics

    def _held_step(self) -> None:
        """An optimiser step under the branch action's learning rate and weight decay."""
        a, groups = self.knobs.action, self.optimizer.param_groups
        saved = [(g["lr"], g.get("weight_decay", 0.0)) for g in groups]
        for g in groups:
            g["lr"] *= 1.0 + a.lr
            if "weight_decay" in g:
                g["weight_decay"] *= a.wd
        self.optimizer.step()
        for g, (lr, wd) in zip(groups, saved):
            g["lr"] = lr
            if "weight_decay" in g:
                g["weight_decay"] = wd

    def _off_band(self, loss: float) -> bool:
        """The loss leaves the event rule's band (a skip-batch action skips that update)."""
        e = self.events
        return e.ema is not None and len(e.resid) >= 2 and loss > e.ema + e.k * e._std()

    def _observe(self, step: int, metrics: dict[str, float]) -> dict[str, float]:
        if self.monitor is None:
            return {}
        from projects.dynamics.monitor import Observation

        t0 = time.perf_counter()
        out = self.monitor(Observation(metrics["loss.train"], metrics["diag.grad_norm"],
                                       metrics["dynamics.attention_entropy"],
                                       metrics["dynamics.activation_entropy"]))
        dt = time.perf_counter() - t0
        self.monitor_s += dt
        self.state.index.append(out["dynamics.index"])
        if out["dynamics.trigger"]:
            self.state.triggers.append(step)
        if out["dynamics.trigger_loss"]:
            self.state.loss_triggers.append(step)
        out["perf.monitor_ms"] = dt * 1e3
        return out

    def _autocast(self):
        on_cuda = self.device.type == "cuda" and self.cfg.train.bf16
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda) if on_cuda \
            else torch.autocast("cpu", enabled=False)

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Validation loss and perplexity on fixed held-out windows."""
        self.model.eval()
        total = 0.0
        for x, y in self._val:
            with self._autocast():
                logits = self.model(x.to(self.device))
            total += float(F.cross_entropy(logits.float().view(-1, logits.shape[-1]), y.to(self.device).reshape(-1)))
        loss = total / len(self._val)
        self.state.val.append((self.state.step, loss))
        return {"loss.val": loss, "metric.perplexity.val": math.exp(min(loss, 50.0))}

    # ------------------------------------------------------------------ study metrics
    def costs(self):
        from projects.dynamics.events import costs

        e = self.cfg.events
        return costs(self.state.losses, self.events.events, self.flops_per_step, e.ema_decay, e.max_recover)

    def anticipation(self) -> dict[str, dict[str, float]]:
        """Precision/recall of the index trigger and of the loss-only trigger (ablation D)."""
        from projects.dynamics.events import match_triggers

        starts, lead = [e.start for e in self.events.events], self.cfg.events.lead
        return {"index": match_triggers(self.state.triggers, starts, lead),
                "loss": match_triggers(self.state.loss_triggers, starts, lead)}
