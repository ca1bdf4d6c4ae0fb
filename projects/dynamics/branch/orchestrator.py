"""The branch episode: trigger -> cp_{t-k} -> Optuna proposes actions -> the proxy scores
them -> the top K are verified for real -> accept/reject -> one action applied to the run.

:class:`Brancher` rides along a run: :meth:`Brancher.after_step` records the step's state
features and an in-memory snapshot (the fast path for cp_{t-k}: the last k + 1 states),
and when the configured trigger fires it runs an episode. :meth:`decide` plans one without
touching the run (the trainer is left where it was); :meth:`adopt` applies the plan: the
trainer continues from the chosen branch at the trigger step, so the k steps since the
branch point are replaced by the chosen future (and re-logged by the entry point).

Modes (``branch.mode``): ``rules`` applies ``branch.rule`` (ablation A), ``proxy`` the
proxy's best unverified (B), ``proxy_verify`` the full method (C).
"""
from __future__ import annotations

import logging
import math
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from projects.dynamics.proxy import features
from projects.dynamics.branch.actions import NULL, Action, as_params, suggest
from projects.dynamics.branch.verify import Rollout, rollout

log = logging.getLogger("labrun.dynamics.branch")


@dataclass
class Plan:
    trigger: int
    branch_point: int
    source: str
    fallback: str | None
    manifest: dict[str, Any]
    candidates: list[dict[str, Any]] = field(default_factory=list)
    rollouts: dict[str, Rollout] = field(default_factory=dict)
    chosen: Action = NULL
    why: str = ""
    proxy_cpu_s: float = 0.0
    verify_cpu_s: float = 0.0

    @property
    def k(self) -> int:
        return self.trigger - self.branch_point

    def decision(self) -> dict[str, Any]:
        """``decision.json``: the chosen action and why (timings apart: they are not the decision)."""
        return {"trigger_step": self.trigger, "branch_step": self.branch_point, "k": self.k, "source": self.source,
                "fallback": self.fallback, "chosen": self.chosen.to_dict(), "chosen_id": self.chosen.key(),
                "no_change": self.chosen.is_null, "why": self.why,
                "verified": [{k: c[k] for k in ("id", "pred_loss", "pred_lo", "pred_hi", "verified_loss",
                                                "verified_diverged", "verified_recovery", "accepted")}
                             for c in self.candidates if "verified_loss" in c]}


class Brancher:
    def __init__(self, cfg: Any, *, proxy: Any = None, log_rows: list[dict] | None = None,
                 sink: Callable[["Plan"], None] | None = None, checkpoint_dir: str | Path | None = None) -> None:
        self.cfg, self.b = cfg, cfg.branch
        self.proxy, self.log_rows, self.sink = proxy, list(log_rows or []), sink
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.ring: deque[tuple[int, dict]] = deque(maxlen=self.b.k + 1)
        self.rows: list[dict[str, float]] = []
        self.episodes: list[dict[str, Any]] = []
        self.last_episode = -10 ** 9
        self.branch_steps = 0
        self.proxy_flops = 0.0
        self.proxy_s = 0.0
        self.verify_s = 0.0
        self.refit_s = 0.0
        self.coverage: list[tuple[float, float, float, float]] = []  # (y, lo, hi, q) of verified candidates

    # ------------------------------------------------------------------ riding along
    def after_step(self, trainer: Any, metrics: dict[str, float]) -> list[tuple[int, dict[str, float]]]:
        """Record the step; branch if the trigger fired. Returns the re-done steps' metrics."""
        step = trainer.state.step
        self.rows = self.rows[:step - 1]
        self.rows.append(features.row(trainer, metrics, self.rows[-1] if self.rows else None))
        self.ring.append((step, trainer.snapshot()))
        key = "dynamics.trigger" if self.b.signal == "index" else "dynamics.trigger_loss"
        if not metrics.get(key) or step - self.last_episode < self.b.cooldown:
            return []
        if self.b.max_episodes and len(self.episodes) >= self.b.max_episodes:
            return []
        plan = self.decide(trainer, step)
        return self.adopt(trainer, plan) if plan is not None else []

    def _branch_point(self, t: int) -> tuple[int, dict, str, str | None] | None:
        """cp_{t-k}: from the run's checkpoint files (``branch.from_files``) or the in-memory
        ring; a file that fails to load falls back to memory, and says so."""
        want = max(t - self.b.k, self.last_episode)
        fallback = None
        if self.b.from_files:
            got, fallback = self._from_file(t, want)
            if got is not None:
                return got[0], got[1], f"file:{got[2]}", None
        mem = [(s, snap) for s, snap in self.ring if s >= want] or list(self.ring)[-1:]
        if not mem:
            log.warning("branch at step %d: no branch point (no snapshot, no checkpoint): not branching", t)
            return None
        step, snap = mem[0]
        if fallback:
            fallback = f"{fallback}; branched from the in-memory snapshot at step {step} instead"
            log.warning("branch at step %d: %s", t, fallback)
        return step, snap, "memory", fallback

    def _from_file(self, t: int, want: int) -> tuple[tuple[int, dict, str] | None, str | None]:
        from tracking import checkpoint

        replaced = [(e["branch_point"], e["trigger"]) for e in self.episodes if not e["no_change"]]
        files = [p for p in checkpoint.periodic(self.checkpoint_dir or "") if checkpoint.step_of(p) <= want
                 and not any(a < checkpoint.step_of(p) < b for a, b in replaced)]  # not a discarded future
        if not files:
            return None, f"no checkpoint file at or before step {want} in {self.checkpoint_dir}"
        path, step = files[0], checkpoint.step_of(files[0])
        if t - step >= self.b.horizon:
            return None, f"{path.name} is {t - step} steps back, beyond branch.horizon ({self.b.horizon})"
        try:
            return (step, checkpoint.load(path), path.name), None
        except checkpoint.CheckpointError as exc:
            return None, f"checkpoint {path.name} is unusable ({exc})"

    # ------------------------------------------------------------------ one episode
    def manifest(self, t: int, bp: int, snap: dict) -> dict[str, Any]:
        """``seed_manifest.json``: everything a replay needs besides the branch point's state."""
        seed = zlib.crc32(f"{self.cfg.seed}:{t}:{bp}".encode()) & 0x7FFFFFFF
        return {"run_seed": self.cfg.seed, "trigger_step": t, "branch_step": bp, "episode_seed": seed,
                "optuna_seed": seed, "reorder_seed": seed + 1, "state_digest": _digest(snap),
                "proposals": self.b.proposals, "top_k": self.b.top_k, "horizon": self.b.horizon, "mode": self.b.mode}

    def decide(self, trainer: Any, t: int) -> Plan | None:
        """Plan an episode at trigger step ``t``; the trainer is left as it was at ``t``."""
        got = self._branch_point(t)
        if got is None:
            return None
        bp, snap, source, fallback = got
        here = trainer.snapshot()
        plan = Plan(t, bp, source, fallback, self.manifest(t, bp, snap))
        prev = self.rows[:bp]
        if self.b.mode == "rules" or self.proxy is None or self.proxy.net is None:
            plan.chosen = Action.from_config(self.b.rule)
            plan.why = "rule-based action (branch.mode=rules)" if self.b.mode == "rules" else \
                "no proxy fitted yet (no pre-training data): the rule-based action"
        else:
            self._search(plan, prev)
            if self.b.mode == "proxy":
                best = plan.candidates[0]
                plan.chosen, plan.why = best["action"], f"best proxy score {best['score']:.4f} (unverified)"
            else:
                self._verify(trainer, plan, snap, prev)
        if plan.k > 0 and not plan.chosen.is_null and plan.chosen.key() not in plan.rollouts:
            plan.rollouts[plan.chosen.key()] = self._roll(trainer, snap, plan, plan.chosen, plan.k, prev)
        trainer.restore(here)
        return plan

    def _roll(self, trainer: Any, snap: dict, plan: Plan, action: Action, steps: int, prev: list) -> Rollout:
        return rollout(trainer, snap, action, steps, hold=self.b.hold, reorder_seed=plan.manifest["reorder_seed"],
                       prev_rows=prev, keep_after=plan.k)

    def _search(self, plan: Plan, prev: list) -> None:
        """Optuna (TPE, ask/tell, in memory) proposes; the proxy scores; distinct actions ranked."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        t0 = time.process_time()
        feats, ema = features.vector(prev, self.b.window, self.cfg.model.layers), prev[-1]["ema"]
        sampler = optuna.samplers.TPESampler(seed=plan.manifest["optuna_seed"], n_startup_trials=min(16, self.b.proposals))
        study = optuna.create_study(direction="maximize", sampler=sampler)
        study.enqueue_trial(as_params(NULL, self.b.allow_skip))  # no change is always a candidate
        seen: dict[Action, dict[str, Any]] = {}
        for _ in range(self.b.proposals):
            trial = study.ask()
            a = suggest(trial, self.b.allow_skip)
            if a not in seen:
                p = self.proxy.predict([feats], [a], [ema])
                score = float(p.scores(self.b.alpha, self.b.beta, self.b.gamma)[0])
                seen[a] = {"id": a.key(), "action": a, "trial": trial.number, "score": score,
                           "pred_loss": float(p.loss[0]), "pred_lo": float(p.lo[0]), "pred_hi": float(p.hi[0]),
                           "pred_q": float(p.q[0]), "pred_risk": float(p.risk[0]), "pred_recovery": float(p.recovery[0])}
            study.tell(trial, seen[a]["score"])
        plan.candidates = sorted(seen.values(), key=lambda c: (-c["score"], c["id"]))
        plan.proxy_cpu_s = time.process_time() - t0
        self.proxy_flops += 2.0 * self.proxy.n_params() * len(seen)

    def _verify(self, trainer: Any, plan: Plan, snap: dict, prev: list) -> None:
        """Real N-step rollouts of the top K; accept those whose real loss@N came in at or below
        the upper end of the proxy's interval (the proxy did not over-promise); collapse to the
        best verified score, in which a divergence costs beta (none accepted: no change).

        Divergence is scored, not a veto: a branch point before an injected LR spike sees the
        spike in every future, and a veto then always chose no change (measured, seed 0)."""
        t0 = time.process_time()
        b = self.b
        for c in plan.candidates[:b.top_k]:
            r = plan.rollouts[c["id"]] = self._roll(trainer, snap, plan, c["action"], b.horizon, prev)
            o = r.outcome
            c.update(verified_loss=o.loss_at_n, verified_diverged=o.diverged, verified_recovery=o.recovery,
                     verified_score=o.score(b.alpha, b.beta, b.gamma),
                     accepted=bool(o.loss_at_n <= c["pred_hi"]))
        plan.verify_cpu_s = time.process_time() - t0
        ok = [c for c in plan.candidates[:b.top_k] if c["accepted"]]
        if not ok:
            plan.chosen = NULL
            plan.why = f"none of the top {b.top_k} verified at or below its interval: no change"
            return
        best = max(ok, key=lambda c: (c["verified_score"], c["id"]))
        plan.chosen = best["action"]
        plan.why = (f"best verified score {best['verified_score']:.4f} among {len(ok)} accepted of {b.top_k} "
                    f"(verified loss {best['verified_loss']:.4f} within [{best['pred_lo']:.4f}, {best['pred_hi']:.4f}])")

    # ------------------------------------------------------------------ applying it
    def adopt(self, trainer: Any, plan: Plan) -> list[tuple[int, dict[str, float]]]:
        """Continue the run from the chosen branch at the trigger step; log rows; refit."""
        redo: list[tuple[int, dict[str, float]]] = []
        verified = sum(r.steps for r in plan.rollouts.values()) if self.b.mode == "proxy_verify" else 0
        if not plan.chosen.is_null and plan.k > 0:
            r = plan.rollouts[plan.chosen.key()]
            trainer.restore(r.kept)
            self.rows = self.rows[:plan.branch_point] + r.rows[:plan.k]
            redo = [(plan.branch_point + i + 1, m) for i, m in enumerate(r.metrics[:plan.k])]
            self.ring.clear()
            self.ring.append((plan.trigger, trainer.snapshot()))
        elif not plan.chosen.is_null:  # k = 0: the action starts now, nothing to replay
            from projects.dynamics.branch.actions import apply
            apply(trainer, plan.chosen, self.b.hold, plan.manifest["reorder_seed"], [])
        self.branch_steps += verified if self.b.mode == "proxy_verify" else (plan.k if not plan.chosen.is_null else 0)
        self.proxy_s += plan.proxy_cpu_s
        self.verify_s += plan.verify_cpu_s
        self.last_episode = plan.trigger
        self._learn(plan)
        self.episodes.append({"trigger": plan.trigger, "branch_point": plan.branch_point, "chosen": plan.chosen.to_dict(),
                              "no_change": plan.chosen.is_null, "proxy_cpu_s": plan.proxy_cpu_s,
                              "verify_cpu_s": plan.verify_cpu_s, "fallback": plan.fallback})
        if self.sink is not None:
            self.sink(plan)
        log.info("branch at step %d from %d (%s): %s -> %s", plan.trigger, plan.branch_point, plan.source,
                 plan.chosen.to_dict(), plan.why)
        return redo

    def _learn(self, plan: Plan) -> None:
        """The verified rollouts become log rows (with the proxy's predictions); refit."""
        prev = self.rows[:plan.branch_point]
        if not prev or self.b.mode != "proxy_verify":
            return
        feats = features.vector(prev, self.b.window, self.cfg.model.layers)
        for c in plan.candidates:
            if "verified_loss" not in c:
                continue
            a = c["action"]
            self.log_rows.append({"source": "branch", "run_seed": self.cfg.seed, "episode": len(self.episodes),
                                  "step": plan.branch_point, "horizon": self.b.horizon, "features": feats,
                                  **action_columns(a), "y_loss": c["verified_loss"], "y_diverged": c["verified_diverged"],
                                  "y_recovery": c["verified_recovery"], "ema": prev[-1]["ema"],
                                  "pred_loss": c["pred_loss"], "pred_lo": c["pred_lo"], "pred_hi": c["pred_hi"],
                                  "pred_q": c["pred_q"], "pred_risk": c["pred_risk"]})
            self.coverage.append((c["verified_loss"], c["pred_lo"], c["pred_hi"], c["pred_q"]))
        if self.b.refit and self.proxy is not None and self.log_rows:
            t0 = time.process_time()
            self.proxy.fit(self.log_rows)
            self.refit_s += time.process_time() - t0
            self.proxy_flops += 6.0 * self.proxy.n_params() * len(self.log_rows) * self.b.epochs

    # ------------------------------------------------------------------ what the run reports
    def summary(self, steps: int, flops_per_step: float) -> dict[str, float]:
        from projects.dynamics.proxy.conformal import coverage

        n = len(self.episodes)
        cov = coverage(*zip(*self.coverage)) if self.coverage else coverage([], [], [], [])
        return {"episodes": float(n), "rate_per_1k": 1e3 * n / max(1, steps),
                "no_change": float(sum(e["no_change"] for e in self.episodes)),
                "branch_steps": float(self.branch_steps),
                "branch_flops": self.branch_steps * flops_per_step + self.proxy_flops,
                "proxy_ms": 1e3 * self.proxy_s / max(1, n), "verify_s": self.verify_s, "refit_s": self.refit_s,
                "coverage_interval": cov["interval"], "coverage_quantile": cov["quantile"],
                "coverage_n": cov["n"], "log_rows": float(len(self.log_rows))}

    # ------------------------------------------------------------------ checkpointed with the run
    def state_dict(self) -> dict[str, Any]:
        return {"rows": list(self.rows), "log_rows": [dict(r) for r in self.log_rows if r["source"] == "branch"],
                "episodes": list(self.episodes), "last_episode": self.last_episode,
                "branch_steps": self.branch_steps, "proxy_flops": self.proxy_flops, "proxy_s": self.proxy_s,
                "verify_s": self.verify_s, "refit_s": self.refit_s, "coverage": list(self.coverage),
                "proxy": self.proxy.state_dict() if self.proxy is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state["rows"])
        self.log_rows = [r for r in self.log_rows if r["source"] != "branch"] + list(state["log_rows"])
        self.episodes, self.last_episode = list(state["episodes"]), state["last_episode"]
        self.branch_steps, self.proxy_flops = state["branch_steps"], state["proxy_flops"]
        self.proxy_s, self.verify_s, self.coverage = state["proxy_s"], state["verify_s"], list(state["coverage"])
        self.refit_s = state["refit_s"]
        if self.proxy is not None and state["proxy"] is not None:
            self.proxy.load_state_dict(state["proxy"])
        self.ring.clear()  # snapshots are not checkpointed: a branch right after a resume reaches back to it


def action_columns(a: Action) -> dict[str, Any]:
    return {"a_lr": a.lr, "a_wd": a.wd, "a_clip": a.clip, "a_momentum_reset": a.momentum_reset,
            "a_reorder": a.reorder, "a_skip": a.skip}


def _digest(snap: dict) -> str:
    """BLAKE2b of the branch point's weights, step and sampler state: which state a manifest belongs to."""
    import hashlib

    import torch

    h = hashlib.blake2b(digest_size=8)
    h.update(str(snap.get("global_step")).encode())
    objs = snap["objects"]
    for name, t in sorted(objs["model"].items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    sampler = (objs.get("sampler") or {}).get("state")
    if isinstance(sampler, torch.Tensor):
        h.update(sampler.numpy().tobytes())
    return h.hexdigest()


__all__ = ["Brancher", "Plan", "action_columns"]
