"""What the benches share: the dynamics benches' options and trainer loop (``branching.py``,
``dynamics_baselines.py``), mean ± std and tables, and the cells of a paired comparison.

The statistics come from :mod:`analysis.stats` and the tables from :mod:`analysis.tables`, as
in ``labrun analyze``, so a bench prints the same numbers the analysis would, and a
statistic the data cannot support as a dash with a footnote, never as 0.000.
"""
from __future__ import annotations

import argparse
import math
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from analysis.stats import Paired
    from analysis.tables import Footnotes


def dynamics_options(p: argparse.ArgumentParser, what: str) -> argparse.ArgumentParser:
    """``--seeds --config --steps --set``: the options every dynamics bench takes."""
    p.add_argument("--seeds", type=int, default=3, help=f"seeds 0..N-1 per {what} (default 3; the sweep uses 5)")
    p.add_argument("--config", default="spiky", help="base config of the dynamics task (default spiky)")
    p.add_argument("--steps", type=int, default=0, help="override train.steps (default: the config's)")
    p.add_argument("--set", action="append", default=[], help="extra dotted override, repeatable")
    return p


def base_overrides(a: argparse.Namespace) -> list[str]:
    """``--set`` values, then ``--steps`` as ``train.steps`` when given."""
    return list(a.set) + ([f"train.steps={a.steps}"] if a.steps else [])


def dynamics_config(config: str, overrides: list[str]):
    from projects.dynamics.config import Config
    from tracking.config import resolve_config

    return resolve_config(Config, config, overrides)


def train(cfg, on_step: Callable[[Any, dict], None] | None = None) -> tuple[Any, float]:
    """The config's steps on a fresh Trainer; returns it and the CPU seconds the steps took."""
    from projects.dynamics.trainer import Trainer

    t = Trainer(cfg)
    t0 = time.process_time()
    for _ in range(cfg.train.steps):
        m = t.step()
        if on_step is not None:
            on_step(t, m)
    return t, time.process_time() - t0


def ms(values: Sequence[float], fmt: str = "{:.3g}") -> str:
    """``mean ± std`` over seeds (NaNs left out; one value shows ± 0), ``-`` for none."""
    from analysis.stats import describe

    d = describe(values, n_boot=0)
    if d.n == 0:
        return "-"
    return f"{fmt.format(d.mean)} ± {fmt.format(d.std if d.n > 1 else 0.0)}"


def table(rows: Sequence[Sequence[object]], head: Sequence[str]) -> str:
    """Left-aligned columns, as these benches have always printed them."""
    from analysis.tables import render

    return render(rows, head, align="l")


def diff_cells(p: "Paired", notes: "Footnotes", fmt: str = "{:+.4f}") -> list[str]:
    """Mean difference, its 95% CI and the paired t-test's p; an absent one is a dash marked
    in ``notes`` with the reason (print ``notes.lines`` under the table)."""
    from analysis.tables import pvalue

    ci = f"[{fmt.format(p.ci_low)}, {fmt.format(p.ci_high)}]" if math.isfinite(p.ci_low) else "–"
    return [fmt.format(p.mean_diff), notes.mark(ci, p.notes.get("ci")), notes.mark(pvalue(p.t_p), p.notes.get("t_p"))]


def print_table(rows: Sequence[Sequence[object]], head: Sequence[str], notes: "Footnotes | None" = None,
                align: str = "lr") -> None:
    """A table with its footnotes under it."""
    from analysis.tables import render

    print(render(rows, head, align=align))
    for line in notes.lines if notes is not None else ():
        print(line)
