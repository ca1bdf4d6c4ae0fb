"""Does the ranking of methods hold from seed to seed?

Each seed is a "rater" that ranks the methods on one metric (1 = best; ties share the
average rank). Kendall's W (coefficient of concordance, with the tie correction) is 1 when
every seed ranks the methods the same way and near 0 when the rankings are unrelated; its
chi-square statistic ``m (n - 1) W`` equals Friedman's test statistic. Next to it: the mean
rank, how often the overall winner is best on a seed, and a pairwise win-rate matrix.
Only seeds that have a value for every method are used (a missing cell cannot be ranked).
Values equal up to rounding (:mod:`analysis.tolerance`) are ties, not an arbitrary order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from analysis import tolerance as tol
from tracking import tags as T

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd


@dataclass
class Ranking:
    values: "pd.DataFrame"        # seeds x methods
    ranks: "pd.DataFrame"         # seeds x methods, 1 = best
    mean_rank: "pd.Series"
    kendall_w: float
    chi2: float
    p_value: float
    winner: str | None
    winner_wins: int
    pairwise: "pd.DataFrame"      # row beats column on this fraction of seeds (ties count half)
    direction: str
    dropped_seeds: list = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    note: str | None = None
    """Why Kendall's W and its p are absent (NaN), when they are."""

    @property
    def n_seeds(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_methods(self) -> int:
        return int(self.values.shape[1])

    def table(self) -> "pd.DataFrame":
        """Per method: mean rank, rank-1 count, per-seed ranks (the table a reader scans)."""
        import pandas as pd

        best = self.ranks.eq(self.ranks.min(axis=1), axis=0)
        out = pd.DataFrame({"mean_rank": self.mean_rank, "wins": best.sum(axis=0).astype(int)})
        for seed in self.ranks.index:
            out[f"seed {seed}"] = self.ranks.loc[seed]
        return out.sort_values("mean_rank", kind="stable")


def kendall_w(ranks: np.ndarray) -> tuple[float, float, float]:
    """W, chi-square and its p-value for an ``m x n`` array of ranks (m raters, n items)."""
    from scipy import stats as st

    r = np.asarray(ranks, dtype="float64")
    m, n = r.shape
    if m < 2 or n < 2:
        return math.nan, math.nan, math.nan
    totals = r.sum(axis=0)
    s = float(((totals - totals.mean()) ** 2).sum())
    ties = 0.0
    for row in r:
        _, counts = np.unique(row, return_counts=True)
        ties += float((counts ** 3 - counts).sum())
    denom = m ** 2 * (n ** 3 - n) - m * ties
    if denom <= 0:  # every seed ties every method: nothing to agree on
        return math.nan, math.nan, math.nan
    w = 12.0 * s / denom
    chi2 = m * (n - 1) * w
    return w, chi2, float(st.chi2.sf(chi2, n - 1))


def rank_methods(frame: "pd.DataFrame", value: str, *, item: str = "group", block: str = T.SEED,
                 direction: str = "min") -> Ranking:
    """Rank the ``item`` values within each ``block`` (seed) on column ``value``."""
    import pandas as pd

    if direction not in ("min", "max"):
        raise ValueError(f"direction must be 'min' or 'max', got {direction!r}")
    table = frame.pivot_table(index=block, columns=item, values=value, aggfunc="mean", sort=True)
    table.columns = [str(c) for c in table.columns]
    complete = table.dropna(axis=0, how="any")
    dropped = [s for s in table.index if s not in complete.index]
    notes: list[str] = []
    if dropped:
        notes.append(f"{len(dropped)} seed(s) lack a value for some method and are left out of the "
                     f"ranking: {', '.join(map(str, dropped[:10]))}")
    tied = pd.DataFrame([tol.snap(row) for row in complete.to_numpy()], index=complete.index,
                        columns=complete.columns) if len(complete) else complete
    ranks = tied.rank(axis=1, method="average", ascending=(direction == "min"))
    mean_rank = ranks.mean(axis=0) if len(ranks) else pd.Series(np.nan, index=table.columns)
    w, chi2, p = kendall_w(ranks.to_numpy()) if len(ranks) else (math.nan,) * 3
    winner, wins = None, 0
    if len(ranks):
        means = complete.mean(axis=0)
        order = sorted(ranks.columns, key=lambda c: (mean_rank[c], means[c] if direction == "min" else -means[c]))
        winner = order[0]
        wins = int(ranks[winner].eq(ranks.min(axis=1)).sum())
    if len(ranks) < 2:
        notes.append(f"rank consistency needs at least 2 seeds shared by every method, got {len(ranks)}")
    cols = list(complete.columns)
    pairwise = pd.DataFrame(np.nan, index=cols, columns=cols)
    if len(ranks):
        r = ranks.to_numpy()
        rate = np.empty((r.shape[1], r.shape[1]))
        for lo in range(0, r.shape[1], 256):          # blocks keep memory flat for many methods
            a = r[:, lo:lo + 256, None]
            rate[lo:lo + 256] = ((a < r[:, None, :]) + 0.5 * (a == r[:, None, :])).mean(axis=0)
        np.fill_diagonal(rate, np.nan)
        pairwise = pd.DataFrame(rate, index=cols, columns=cols)
    return Ranking(complete, ranks, mean_rank, w, chi2, p, winner, wins, pairwise, direction, dropped, notes,
                   _w_note(len(ranks), len(cols), w))


def _w_note(seeds: int, methods: int, w: float) -> str | None:
    if not math.isnan(w):
        return None
    if methods < 2:
        return "one group: nothing to rank"
    if seeds < 2:
        return f"{seeds} seed(s) rank every group: agreement needs 2"
    return "every seed ties every group: nothing to agree on"
