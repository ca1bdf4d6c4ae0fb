"""``log_db.parquet``: the proxy's training data, one row per (state, action) -> outcome.

The schema is fixed here (every column with its unit and meaning, stored in the Parquet
file's field metadata too) and documented in the task README. Feature columns are
``f_<signal>``, ``f_<signal>_ema``, ``f_<signal>_delta`` for the signals of
:mod:`projects.dynamics.proxy.features`; their number depends on ``model.layers``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

FIXED = [  # name, arrow type, unit, meaning
    ("source", "string", "-", "baseline (a run's own trajectory, no action), warmup (pre-training "
                              "rollouts), branch (an episode's verified rollout)"),
    ("run_seed", "int64", "-", "seed of the run the row comes from"),
    ("episode", "int64", "-", "branch episode number within the run (-1: not from an episode)"),
    ("step", "int64", "step", "the branch point: the global step the features describe"),
    ("horizon", "int64", "steps", "N: steps between the branch point and the outcome"),
    ("a_lr", "float64", "fraction", "action: relative LR change (-0.2, -0.1, 0, 0.1)"),
    ("a_wd", "float64", "factor", "action: weight-decay factor (0.5, 1, 2)"),
    ("a_clip", "string", "-", "action: clip policy (keep, off, zclip, fixed, spam)"),
    ("a_momentum_reset", "bool", "-", "action: first moments zeroed at the branch point"),
    ("a_reorder", "string", "-", "action: data reorder (none, shuffle_block)"),
    ("a_skip", "bool", "-", "action: skip updates on batches outside the event band"),
    ("y_loss", "float64", "nats/token", "outcome: mean training loss of the last 3 steps of the horizon"),
    ("y_diverged", "bool", "-", "outcome: an instability event started within the horizon (or a non-finite loss)"),
    ("y_recovery", "float64", "steps", "outcome: steps until the loss is back in the recovery band (N: never)"),
    ("ema", "float64", "nats/token", "event rule's loss EMA at the branch point (the proxy predicts y_loss - ema)"),
    ("pred_loss", "float64", "nats/token", "proxy forecast of y_loss when the row was verified (NaN: none)"),
    ("pred_lo", "float64", "nats/token", "lower end of the split-conformal interval at branch.confidence"),
    ("pred_hi", "float64", "nats/token", "upper end of that interval"),
    ("pred_q", "float64", "nats/token", "calibrated upper quantile of y_loss at branch.risk_level"),
    ("pred_risk", "float64", "probability", "proxy P(divergence by +N)"),
]
FEATURE_MEANING = {
    "loss": ("nats/token", "training loss of the step"),
    "loss_gap": ("nats/token", "loss minus the event rule's EMA"),
    "log_grad_norm": ("log", "natural log of the pre-clipping gradient norm"),
    "lr": ("1e-3", "learning rate in force, x1000"),
    "wd": ("-", "weight decay in force"),
    "clip_bound": ("norm", "fixed clipping norm in force (-1: adaptive ZClip/SPAM-style, 0: none)"),
    "momentum_reset": ("0/1", "first moments were reset at this step"),
    "noisy": ("0/1", "the batch was corrupted by the instability injector"),
    "batch_unique": ("fraction", "distinct tokens in the batch / vocabulary size"),
    "attn_entropy": ("nats", "mean attention entropy over layers"),
    "act_entropy": ("nats", "feature entropy of the last block's MLP hidden state"),
    "layer_entropy": ("nats", "feature entropy of block i's output (held between summaries)"),
}
SUFFIX = {"": "value at the step", "_ema": "EMA over the last W steps", "_delta": "value minus the value W-1 steps before"}


def schema(feature_names: Sequence[str]) -> Any:
    import pyarrow as pa

    fields = [pa.field(n, getattr(pa, "bool_" if t == "bool" else t)(), metadata={"unit": u, "meaning": m})
              for n, t, u, m in FIXED]
    for f in feature_names:
        base = next(s for s in ("_ema", "_delta", "") if f.endswith(s))
        sig = f[: len(f) - len(base)] if base else f
        unit, meaning = FEATURE_MEANING["layer_entropy" if sig.startswith("layer") else sig]
        fields.append(pa.field(f"f_{f}", pa.float64(), metadata={"unit": unit, "meaning": f"{meaning}: {SUFFIX[base]}"}))
    return pa.schema(fields, metadata={"labrun.table": "dynamics.branch.log_db", "version": "1"})


def write(rows: Sequence[dict[str, Any]], feature_names: Sequence[str], path: str | Path) -> Path:
    """Rows with the FIXED keys and ``features`` (a list in ``feature_names`` order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    sch = schema(feature_names)
    cols: dict[str, list] = {n: [r.get(n, float("nan") if t == "float64" else None) for r in rows] for n, t, _, _ in FIXED}
    for i, f in enumerate(feature_names):
        cols[f"f_{f}"] = [float(r["features"][i]) for r in rows]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.table(cols, schema=sch), tmp)
    tmp.replace(path)  # atomic: a concurrent reader sees the old file or the whole new one
    return path


def read(path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows and feature names back from a file written by :func:`write`."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    names = [n[2:] for n in table.column_names if n.startswith("f_")]
    data = table.to_pydict()
    rows = []
    for i in range(table.num_rows):
        r = {n: data[n][i] for n, *_ in FIXED}
        r["features"] = [data[f"f_{f}"][i] for f in names]
        rows.append(r)
    return rows, names


__all__ = ["FIXED", "schema", "write", "read"]
