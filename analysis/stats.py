"""Statistics over seeds: mean ± std ± sem, t and bootstrap 95% CIs, paired tests.

Conventions a reader of a paper assumes, made explicit: the std is the sample std
(``ddof=1``); the t interval is ``mean ± t_{(1+c)/2, n-1} · sem``; the bootstrap interval is
the percentile interval of ``n_boot`` resampled means from a seeded generator, so the same
table comes out every time. Small n gets a warning in words rather than a silent number.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

CONFIDENCE = 0.95
N_BOOT = 10_000
SEED = 0


@dataclass
class Summary:
    """One group's numbers over its runs (seeds)."""

    n: int
    mean: float
    std: float
    sem: float
    ci_low: float
    ci_high: float
    boot_low: float
    boot_high: float
    median: float
    min: float
    max: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def describe(values: Sequence[float], *, confidence: float = CONFIDENCE, n_boot: int = N_BOOT,
             seed: int = SEED) -> Summary:
    """Mean, sample std, sem, t-based and bootstrap CIs of the finite values given."""
    from scipy import stats as st

    x = np.asarray(values, dtype="float64")
    x = x[np.isfinite(x)]
    n = int(x.size)
    nan = math.nan
    if n == 0:
        return Summary(0, nan, nan, nan, nan, nan, nan, nan, nan, nan, nan)
    mean = float(x.mean())
    if n == 1:
        return Summary(1, mean, nan, nan, nan, nan, nan, nan, mean, mean, mean)
    std = float(x.std(ddof=1))
    sem = std / math.sqrt(n)
    half = float(st.t.ppf((1 + confidence) / 2, n - 1)) * sem
    boot_low, boot_high = bootstrap_ci(x, confidence=confidence, n_boot=n_boot, seed=seed)
    return Summary(n, mean, std, sem, mean - half, mean + half, boot_low, boot_high,
                   float(np.median(x)), float(x.min()), float(x.max()))


def bootstrap_ci(values: Sequence[float], *, confidence: float = CONFIDENCE, n_boot: int = N_BOOT,
                 seed: int = SEED) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (resampling with replacement, seeded)."""
    x = np.asarray(values, dtype="float64")
    if x.size < 2 or n_boot <= 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def small_n_warnings(label: str, n: int) -> list[str]:
    """What a reader should know before trusting a group's interval."""
    if n <= 1:
        return [f"{label}: n={n}, no std or CI (needs at least 2 seeds)"]
    if n < 5:
        return [f"{label}: n={n}, CIs are wide and the bootstrap CI is unreliable below 5 seeds"]
    return []


@dataclass
class Paired:
    """A vs B over the seeds both have: differences are ``a - b``."""

    a: str
    b: str
    n: int
    mean_diff: float
    std_diff: float
    ci_low: float
    ci_high: float
    t_stat: float
    t_p: float
    wilcoxon_stat: float
    wilcoxon_p: float
    effect_size_dz: float
    """Cohen's d_z: mean difference / std of differences (the paired effect size)."""
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def paired_comparison(a: Sequence[float], b: Sequence[float], *, labels: tuple[str, str] = ("a", "b"),
                      confidence: float = CONFIDENCE) -> Paired:
    """Paired t-test and Wilcoxon signed-rank test on matched values (same seed, same index)."""
    from scipy import stats as st

    x = np.asarray(a, dtype="float64")
    y = np.asarray(b, dtype="float64")
    if x.shape != y.shape:
        raise ValueError(f"paired values need equal lengths, got {x.size} and {y.size}")
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    d = x - y
    n = int(d.size)
    nan = math.nan
    notes: list[str] = []
    if n < 2:
        notes.append(f"{labels[0]} vs {labels[1]}: {n} shared seed(s), no test possible (needs >= 2)")
        return Paired(labels[0], labels[1], n, float(d.mean()) if n else nan, nan, nan, nan, nan, nan,
                      nan, nan, nan, notes)
    mean = float(d.mean())
    sd = float(d.std(ddof=1))
    sem = sd / math.sqrt(n)
    half = float(st.t.ppf((1 + confidence) / 2, n - 1)) * sem
    if sd == 0:
        t_stat, t_p = (math.nan, math.nan) if mean == 0 else (math.copysign(math.inf, mean), 0.0)
        dz = math.nan if mean == 0 else math.copysign(math.inf, mean)
        notes.append(f"{labels[0]} vs {labels[1]}: identical differences on every seed (std 0)")
    else:
        res = st.ttest_rel(x, y)
        t_stat, t_p, dz = float(res.statistic), float(res.pvalue), mean / sd
    if np.all(d == 0):
        w_stat, w_p = math.nan, math.nan
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = st.wilcoxon(x, y)
        w_stat, w_p = float(w.statistic), float(w.pvalue)
    if n < 6:
        notes.append(f"{labels[0]} vs {labels[1]}: n={n} shared seeds; a two-sided Wilcoxon test "
                     "cannot reach p < 0.05 below 6 pairs")
    return Paired(labels[0], labels[1], n, mean, sd, mean - half, mean + half, t_stat, t_p,
                  w_stat, w_p, dz, notes)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (NaN stays NaN), for several comparisons at once."""
    p = np.asarray(pvalues, dtype="float64")
    out = np.full(p.shape, np.nan)
    idx = [i for i in np.argsort(p) if np.isfinite(p[i])]
    m = len(idx)
    running = 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def group_stats(frame: "pd.DataFrame", value: str, by: str = "group", *, confidence: float = CONFIDENCE,
                n_boot: int = N_BOOT, seed: int = SEED) -> "pd.DataFrame":
    """One row per value of ``by`` (first-seen order): the fields of :class:`Summary`.

    Equal to :func:`describe` per group, but vectorised: a sweep of thousands of cells gets
    its table in well under a second. The bootstrap resamples of every group of size n use
    the same seeded index matrix that :func:`describe` would draw for that n.
    """
    import pandas as pd
    from scipy import stats as st

    data = frame[[by, value]].copy()
    data[value] = pd.to_numeric(data[value], errors="coerce").astype("float64")
    data = data[np.isfinite(data[value])] if len(data) else data
    order = list(dict.fromkeys(frame[by]))
    g = data.groupby(by, sort=False)[value]
    out = pd.DataFrame({"n": g.count(), "mean": g.mean(), "std": g.std(ddof=1), "median": g.median(),
                        "min": g.min(), "max": g.max()}).reindex(order)
    out["n"] = out["n"].fillna(0).astype(int)
    n = out["n"].to_numpy()
    out.loc[n < 2, "std"] = np.nan
    out["sem"] = out["std"] / np.sqrt(np.where(n > 0, n, np.nan))
    tq = np.full(len(out), np.nan)
    many = n >= 2
    tq[many] = st.t.ppf((1 + confidence) / 2, n[many] - 1)
    out["ci_low"] = out["mean"] - tq * out["sem"]
    out["ci_high"] = out["mean"] + tq * out["sem"]
    out["boot_low"], out["boot_high"] = np.nan, np.nan
    if n_boot > 0:
        alpha = (1 - confidence) / 2
        # every group's values as one padded matrix row (no per-group pandas objects)
        row = pd.Index(out.index).get_indexer(data[by])
        col = data.groupby(by, sort=False).cumcount().to_numpy()
        padded = np.full((len(out), int(n.max())), np.nan)
        padded[row, col] = data[value].to_numpy()
        boot = np.full((len(out), 2), np.nan)
        for size in sorted(set(n[many].tolist())):
            rows = np.flatnonzero(n == size)
            idx = np.random.default_rng(seed).integers(0, size, size=(n_boot, size))
            # resampled means as a product: weights[b, i] = times value i is drawn in resample b
            weights = np.zeros((n_boot, size))
            np.add.at(weights, (np.repeat(np.arange(n_boot), size), idx.ravel()), 1.0 / size)
            for lo in range(0, len(rows), 64):
                chunk = rows[lo:lo + 64]
                means = padded[chunk, :size] @ weights.T                   # groups x n_boot
                boot[chunk] = np.quantile(means, [alpha, 1 - alpha], axis=1).T
        out["boot_low"], out["boot_high"] = boot[:, 0], boot[:, 1]
    out.index.name = by
    fields = ["n", "mean", "std", "sem", "ci_low", "ci_high", "boot_low", "boot_high", "median", "min", "max"]
    return out[fields].reset_index()
