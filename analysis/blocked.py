"""Methods compared over many conditions: Demšar (2006)'s procedure.

A study asks which method wins *within* each condition (task, dataset, cell, model pair) and
whether that holds across conditions; ranking every (method, condition) group against every
other answers a different question. Here each block (one setting of the other axes) ranks the
methods on their mean over seeds; across blocks come the average ranks, the Friedman test
with the Iman–Davenport correction, Nemenyi's all-pairs test with its critical difference
and Holm's step-down test of every method against a control. The post-hoc p-values come from
``scikit-posthocs``; the CD and the control test, which it lacks, are computed here and
tested against the published critical values.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np


if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

ALPHA = 0.05


@dataclass
class BlockedComparison:
    values: "pd.DataFrame"          # blocks x methods: each method's mean over seeds in the block
    ranks: "pd.DataFrame"           # blocks x methods, 1 = best
    mean_rank: "pd.Series"          # best first
    friedman_chi2: float
    friedman_p: float
    iman_davenport_f: float
    iman_davenport_p: float
    cd: float                       # Nemenyi's critical difference at ALPHA
    nemenyi_p: "pd.DataFrame"       # methods x methods
    control: str
    holm: "pd.DataFrame"            # vs control: z, p, Holm-adjusted p
    dropped_blocks: list[str] = field(default_factory=list)
    note: str | None = None         # why the tests are absent, when they are

    @property
    def n_blocks(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_methods(self) -> int:
        return int(self.values.shape[1])


def critical_difference(k: int, n: int, alpha: float = ALPHA) -> float:
    """Nemenyi's CD: two methods differ when their average ranks differ by at least this."""
    from scipy.stats import studentized_range

    q = studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q * math.sqrt(k * (k + 1) / (6.0 * n)))


def friedman(ranks: np.ndarray) -> tuple[float, float, float, float]:
    """Friedman's chi-square (tie-corrected) and the Iman–Davenport F, with p-values."""
    from analysis.ranking import kendall_w

    n, k = ranks.shape
    _, chi2, p = kendall_w(ranks)     # m (n-1) W is Friedman's statistic, ties corrected
    return (chi2, p, *iman_davenport(chi2, n, k))


def iman_davenport(chi2: float, n: int, k: int) -> tuple[float, float]:
    """Iman and Davenport showed Friedman's chi-square is conservative; their F statistic,
    ``(N-1) chi2 / (N(k-1) - chi2)`` on (k-1, (k-1)(N-1)) df, is the one Demšar recommends."""
    from scipy import stats as st

    if math.isnan(chi2):
        return math.nan, math.nan
    denom = n * (k - 1) - chi2
    if denom <= 0:                    # every block ranks the methods the same way
        return math.inf, 0.0
    f = (n - 1) * chi2 / denom
    return float(f), float(st.f.sf(f, k - 1, (k - 1) * (n - 1)))


def holm_vs_control(mean_rank: "pd.Series", control: str, n_blocks: int) -> "pd.DataFrame":
    """Each method against the control: z of the rank difference, two-sided p, Holm-adjusted."""
    import pandas as pd
    from scipy.stats import norm

    from analysis.stats import holm

    k = len(mean_rank)
    se = math.sqrt(k * (k + 1) / (6.0 * n_blocks))
    others = [m for m in mean_rank.index if m != control]
    z = [(mean_rank[m] - mean_rank[control]) / se for m in others]
    p = [float(2 * norm.sf(abs(v))) for v in z]
    return pd.DataFrame({"z": z, "p": p, "holm_p": holm(p)}, index=others)


def compare_blocks(runs: "pd.DataFrame", value: str, *, method: str = "group", block: str = "block",
                   direction: str = "min", control: str | None = None) -> BlockedComparison:
    """Rank ``method`` within each ``block`` on the mean of ``value`` over its runs (seeds)."""
    import pandas as pd
    import scikit_posthocs as sp

    from analysis.ranking import rank_methods

    # the blocks are the raters of analysis.ranking: same pivot, ties up to rounding, chi2 = Friedman's
    r = rank_methods(runs, value, item=method, block=block, direction=direction)
    complete, ranks = r.values, r.ranks
    mean_rank = r.mean_rank.sort_values(kind="stable")
    k, n = r.n_methods, r.n_seeds
    dropped = [str(b) for b in r.dropped_seeds]
    if control is not None and control not in complete.columns:
        from tracking.config import ConfigError

        raise ConfigError(f"--control: no method {control!r}; methods: {', '.join(complete.columns)}")
    control = control or (str(mean_rank.index[0]) if n else "")
    note = _note(k, n)
    if note:
        nan = pd.DataFrame(np.nan, index=complete.columns, columns=complete.columns)
        return BlockedComparison(complete, ranks, mean_rank, *(math.nan,) * 5, nan, control,
                                 pd.DataFrame(columns=["z", "p", "holm_p"]), dropped, note)
    nemenyi = sp.posthoc_nemenyi_friedman(ranks.to_numpy())   # it ranks each row again: the same ranks
    nemenyi.index = nemenyi.columns = list(complete.columns)
    return BlockedComparison(complete, ranks, mean_rank, r.chi2, r.p_value, *iman_davenport(r.chi2, n, k),
                             critical_difference(k, n), nemenyi, control, holm_vs_control(mean_rank, control, n),
                             dropped, None)


def _note(k: int, n: int) -> str | None:
    if k < 2:
        return "one method: nothing to compare"
    if n < 2:
        return f"{n} block(s) hold every method: the Friedman test needs 2"
    return None


def cliques(mean_rank: "pd.Series", cd: float) -> list[Sequence[str]]:
    """Maximal runs of methods (in rank order) whose average ranks lie within one CD: the bars
    of a critical-difference diagram, also said in words."""
    names, r = list(mean_rank.index), list(mean_rank.to_numpy())
    out: list[list[str]] = []
    for i in range(len(names)):
        j = i
        while j + 1 < len(names) and r[j + 1] - r[i] < cd:
            j += 1
        if j > i and not (out and set(names[i:j + 1]) <= set(out[-1])):
            out.append(names[i:j + 1])
    return out


def other_axes(runs: "pd.DataFrame", method: str, seed_cols: Sequence[str]) -> list[str]:
    """The columns that make a block: the condition and the params that vary *within* a method.

    A param that takes one value per method (``train.method``, a method's own knob) is part
    of the method, and seeds are what a block averages over; what is left is the setting the
    methods are compared in (a cell, a task, a dataset, a model pair).
    """
    from tracking import tags as T

    cols = [c for c in runs.columns if (c == T.CONDITION or c.startswith("params."))
            and c not in seed_cols and c != method and not c.endswith("seed")]
    varying = [c for c in cols if runs[c].astype(str).nunique() > 1]
    per_method = runs[varying].astype(str).groupby(runs[method].astype(str)).nunique()
    return [c for c in varying if int(per_method[c].max()) > 1]


def block_labels(runs: "pd.DataFrame", cols: Sequence[str]) -> "pd.Series":
    """``cell=3/task=graph``: the block's setting, params shown without their prefix."""
    def show(col: str) -> "pd.Series":
        name = col[len("params."):] if col.startswith("params.") else col.rsplit(".", 1)[-1]
        return name + "=" + runs[col].astype(str)

    parts = [show(c) for c in cols]
    out = parts[0]
    for p in parts[1:]:
        out = out + "/" + p
    return out.astype(object)
