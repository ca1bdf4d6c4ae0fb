"""The proxy's pre-training data: a warm-up collection from a baseline run, cached.

Which data, and why: one run of the same config without branching, with seed
``branch.pretrain_seed`` (not a seed the study evaluates, so no run sees its own future).
Its own trajectory gives ``baseline`` rows (the null action, every other step); at its
trigger steps (index and loss-only, minus k: where episodes will branch) and at calm steps
in between, ``branch.pretrain_actions`` random actions and the null action are rolled out
for N steps (``warmup`` rows). Only these rows show the proxy what an action does.

``branch.pretrain=auto`` caches the rows as ``log_db.parquet`` under ``branch.cache_dir``
(else ``$LABRUN_BRANCH_CACHE``, else ``~/.cache/labrun/branch``), keyed by everything that
shapes them, so the runs of a sweep collect once. The collection's compute is reported
apart (``collect_cpu_s``) and not counted in a run's wasted FLOPs: it is amortised over
every run that reuses it.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import time
from pathlib import Path
from typing import Any

from projects.dynamics.proxy import features, logdb
from projects.dynamics.branch.actions import CLIPS, LR_DELTAS, NULL, REORDERS, WD_FACTORS, Action
from projects.dynamics.branch.orchestrator import action_columns
from projects.dynamics.branch.verify import outcome, rollout


def cache_dir(b: Any) -> Path:
    return Path(b.cache_dir or os.environ.get("LABRUN_BRANCH_CACHE") or Path.home() / ".cache" / "labrun" / "branch")


def cache_key(cfg: Any) -> str:
    """Digest of what shapes the rows: the system (data, model, train, instability, monitor,
    events) and the branch keys the collection reads; not the run's seed or mode."""
    d = cfg.model_dump(mode="json")
    keep = {k: d[k] for k in ("data", "model", "train", "instability", "monitor", "events")}
    keep["train"] = {k: v for k, v in keep["train"].items() if k != "sleep_s"}
    keep["branch"] = {k: d["branch"][k] for k in ("k", "horizon", "hold", "window", "pretrain_seed", "pretrain_points",
                                                 "pretrain_actions", "allow_skip")}
    return hashlib.blake2b(json.dumps(keep, sort_keys=True).encode(), digest_size=8).hexdigest()


def pretrain_rows(cfg: Any, log: Any = None) -> tuple[list[dict], dict[str, Any]]:
    """The rows ``branch.pretrain`` names, and where they came from."""
    b = cfg.branch
    if b.pretrain == "none":
        return [], {"source": "none"}
    if b.pretrain != "auto":
        rows, _ = logdb.read(b.pretrain)
        return rows, {"source": b.pretrain}
    path = cache_dir(b) / f"log_db-{cache_key(cfg)}.parquet"
    if path.exists():
        rows, _ = logdb.read(path)
        return rows, {"source": str(path), "cached": True}
    if log is not None:
        log.info("branch: collecting the proxy's pre-training data (seed %d) into %s", b.pretrain_seed, path)
    t0 = time.process_time()
    rows = collect(cfg)
    logdb.write(rows, features.feature_names(cfg.model.layers), path)
    return rows, {"source": str(path), "cached": False, "collect_cpu_s": time.process_time() - t0}


def _random_action(rng: random.Random, allow_skip: bool) -> Action:
    return Action(rng.choice(LR_DELTAS), rng.choice(WD_FACTORS), rng.choice(("keep", *CLIPS)), rng.random() < 0.5,
                  rng.choice(REORDERS), allow_skip and rng.random() < 0.5)


def collect(cfg: Any) -> list[dict]:
    """Run the baseline, then roll out actions from its branch points (see the module doc).
    The global RNGs are left as they were: the run that asked must not see a different stream."""
    import numpy as np
    import torch

    state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            return _collect(cfg)
    finally:
        random.setstate(state)
        np.random.set_state(np_state)


def _collect(cfg: Any) -> list[dict]:
    from projects.dynamics.trainer import Trainer

    b = cfg.branch
    base = cfg.model_copy(update={"seed": b.pretrain_seed, "branch": b.model_copy(update={"enabled": True})})
    t = Trainer(base)
    ring, points, rows, metrics = [], {}, [], []
    steps = base.train.steps
    calm = set(range(b.k + b.window, steps - b.horizon, max(1, steps // max(1, b.pretrain_points))))
    for _ in range(steps):
        m = t.step()
        metrics.append(m)
        rows.append(features.row(t, m, rows[-1] if rows else None))
        ring = (ring + [(t.state.step, t.snapshot())])[-(b.k + 1):]
        fired = m.get("dynamics.trigger") or m.get("dynamics.trigger_loss")
        if (fired or t.state.step in calm) and ring[0][0] >= b.window and ring[0][0] + b.horizon <= steps:
            points.setdefault(ring[0][0], (ring[0][1], bool(fired)))
    out = _baseline_rows(base, rows, t)
    chosen = sorted(points, key=lambda s: (not points[s][1], s))[:b.pretrain_points]
    rng = random.Random(b.pretrain_seed)
    for step in sorted(chosen):
        snap = points[step][0]
        prev = rows[:step]
        feats = features.vector(prev, b.window, base.model.layers)
        for a in [NULL] + [_random_action(rng, b.allow_skip) for _ in range(b.pretrain_actions)]:
            r = rollout(t, snap, a, b.horizon, hold=b.hold, reorder_seed=rng.randrange(2 ** 31), prev_rows=prev)
            o = r.outcome
            out.append({"source": "warmup", "run_seed": base.seed, "episode": -1, "step": step, "horizon": b.horizon,
                        "features": feats, **action_columns(a), "y_loss": o.loss_at_n, "y_diverged": o.diverged,
                        "y_recovery": o.recovery, "ema": prev[-1]["ema"]})
    return out


def _baseline_rows(cfg: Any, rows: list[dict], t: Any) -> list[dict]:
    """The baseline's own future at every other step: the null action's outcomes."""
    b, out = cfg.branch, []
    starts = [e.start for e in t.events.events]
    losses = [r["loss"] for r in rows]
    for s in range(b.window, len(rows) - b.horizon + 1, 2):  # s: the branch point's step (rows[s-1])
        o = outcome(losses[s:s + b.horizon], rows[s - 1]["band"], sum(s < e <= s + b.horizon for e in starts),
                    cfg.events.calm)
        out.append({"source": "baseline", "run_seed": cfg.seed, "episode": -1, "step": s, "horizon": b.horizon,
                    "features": features.vector(rows[:s], b.window, cfg.model.layers), **action_columns(NULL),
                    "y_loss": o.loss_at_n, "y_diverged": o.diverged, "y_recovery": o.recovery,
                    "ema": rows[s - 1]["ema"]})
    return out


__all__ = ["pretrain_rows", "collect", "cache_key", "cache_dir"]
