"""Statistics over seeds: mean ± std ± sem, t and bootstrap 95% CIs, paired tests.

Conventions a reader of a paper assumes, made explicit: the std is the sample std
(``ddof=1``); the t interval is ``mean ± t_{(1+c)/2, n-1} · sem``; the bootstrap interval is
the percentile interval of ``n_boot`` resampled means from a seeded generator, so the same
table comes out every time. Small n gets a warning in words rather than a silent number.

A statistic that the data cannot support is absent (NaN) with a note saying why, never a
number that overclaims: identical values have no interval (it would have zero width),
identical differences no t-test (its p would be 0 from any n). "Identical" is judged with
:mod:`analysis.tolerance`, so differences equal up to rounding count as identical.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from analysis import tolerance as tol

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

CONFIDENCE = 0.95
N_BOOT = 10_000
SEED = 0
IDENTICAL_VALUES = "identical values on every seed: no interval (it would have zero width)"
IDENTICAL_DIFFS = "identical differences on every seed: no t-test, CI or d_z (the std of the differences is 0)"
NO_DIFFS = "no differences: equal on every seed"


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
    if tol.negligible(std, max(abs(mean), tol.scale(x))):   # identical up to rounding
        return Summary(n, mean, 0.0, 0.0, nan, nan, nan, nan, float(np.median(x)), float(x.min()), float(x.max()))
    sem = std / math.sqrt(n)
    half = float(st.t.ppf((1 + confidence) / 2, n - 1)) * sem
    boot_low, boot_high = bootstrap_ci(x, confidence=confidence, n_boot=n_boot, seed=seed)
    return Summary(n, mean, std, sem, mean - half, mean + half, boot_low, boot_high,
                   float(np.median(x)), float(x.min()), float(x.max()))


def interval_note(n: int, std: float) -> str | None:
    """Why a group has no CI (None when it has one), for a footnote or ``stats.json``."""
    if n < 2:
        return f"{'no run' if n == 0 else 'a single run'}: no spread, no interval (needs 2 seeds)"
    if std == 0:
        return IDENTICAL_VALUES
    return None


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
    """A vs B over the seeds both have: differences are ``a - b``.

    A statistic the data cannot support is NaN and ``notes`` says why, under the name of
    the field (``t_p`` also speaks for ``t_stat`` and a Holm p, ``ci`` for both bounds);
    a note on a statistic that is present is a caveat to print beside it.
    """

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
    notes: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: an absent statistic is None (null), its reason in ``notes``."""
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in asdict(self).items()}


def paired_comparison(a: Sequence[float], b: Sequence[float], *, labels: tuple[str, str] = ("a", "b"),
                      confidence: float = CONFIDENCE) -> Paired:
    """Paired t-test and Wilcoxon signed-rank test on matched values (same seed, same index).

    Differences that are identical up to rounding take the constant branch: no t-test, CI or
    d_z, and the Wilcoxon test (all its ranks tie: the sign test) with that caveat.
    """
    x = np.asarray(a, dtype="float64")
    y = np.asarray(b, dtype="float64")
    if x.shape != y.shape:
        raise ValueError(f"paired values need equal lengths, got {x.size} and {y.size}")
    with np.errstate(over="ignore", invalid="ignore"):
        ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(x - y)
    x, y = x[ok], y[ok]
    d = x - y
    n = int(d.size)
    nan = math.nan
    who = f"{labels[0]} vs {labels[1]}"
    if n < 2:
        why = f"{n} shared seed(s): no test (needs 2)"
        return Paired(labels[0], labels[1], n, float(d.mean()) if n else nan, nan, nan, nan, nan, nan, nan, nan,
                      nan, [f"{who}: {n} shared seed(s), no test possible (needs >= 2)"],
                      dict.fromkeys(("t_p", "ci", "wilcoxon_p", "effect_size_dz"), why))
    size = tol.scale(x, y)          # rounding in a - b is relative to the values, not to a - b
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    notes: list[str] = []
    if tol.negligible(sd, max(abs(mean), size)):
        p = _constant(labels, d, size)
    else:
        p = _tests(labels, x, y, d, size, confidence)
    if math.isfinite(p.wilcoxon_p) and n < 6:
        notes.append(f"{who}: n={n} shared seeds; a two-sided Wilcoxon test cannot reach p < 0.05 below 6 pairs")
    p.warnings = p.warnings + notes
    return p


def _tests(labels: tuple[str, str], x: np.ndarray, y: np.ndarray, d: np.ndarray, size: float,
           confidence: float) -> Paired:
    """Differences that vary: t-test with its CI and d_z; Wilcoxon on near-ties made ties."""
    from scipy import stats as st

    n, mean, sd = int(d.size), float(d.mean()), float(d.std(ddof=1))
    half = float(st.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    res = st.ttest_rel(x, y)
    w_stat, w_p, notes = _wilcoxon(d, size)
    return Paired(labels[0], labels[1], n, mean, sd, mean - half, mean + half, float(res.statistic),
                  float(res.pvalue), w_stat, w_p, mean / sd, [], notes)


def _constant(labels: tuple[str, str], d: np.ndarray, size: float) -> Paired:
    """Identical differences: a t-test would divide by rounding noise (p ~ 1e-28 from 3 seeds)."""
    nan = math.nan
    n, mean = int(d.size), float(d.mean())
    who = f"{labels[0]} vs {labels[1]}"
    if tol.negligible(mean, size):
        return Paired(labels[0], labels[1], n, 0.0, 0.0, nan, nan, nan, nan, nan, nan, nan,
                      [f"{who}: {NO_DIFFS}"], dict.fromkeys(("t_p", "ci", "wilcoxon_p", "effect_size_dz"), NO_DIFFS))
    from scipy import stats as st

    # every |d| ties, so the signed-rank test is the sign test (zeros dropped, as Wilcoxon's)
    up, signed = int(np.sum(d > 0)), int(np.sum(d != 0))
    w_stat = min(up, signed - up) * (signed + 1) / 2
    w_p = float(st.binomtest(up, signed, 0.5).pvalue)
    notes = dict.fromkeys(("t_p", "ci", "effect_size_dz"), IDENTICAL_DIFFS)
    notes["wilcoxon_p"] = (f"identical differences: the Wilcoxon ranks all tie, so it is the sign test, and "
                           f"{signed} pairs cannot give p below {2 * 0.5 ** signed:.4g}")
    return Paired(labels[0], labels[1], n, mean, 0.0, nan, nan, nan, nan, w_stat, w_p, nan,
                  [f"{who}: {IDENTICAL_DIFFS}; Wilcoxon p is the sign test's"], notes)


def _wilcoxon(d: np.ndarray, size: float) -> tuple[float, float, dict[str, str]]:
    """Signed-rank test on the differences, |d| equal within the tolerance ranked as ties and
    |d| within it of 0 dropped as zeros (scipy's default), as for a ranking."""
    from scipy import stats as st

    magnitude = tol.snap(np.append(np.abs(d), 0.0), size)[:-1]    # the appended 0 pulls near-zeros to 0
    ds = np.sign(d) * magnitude
    if np.all(ds == 0):
        return math.nan, math.nan, {"wilcoxon_p": NO_DIFFS}
    nonzero = ds[ds != 0]
    if ds.size <= 13 and (nonzero.size < ds.size or np.unique(np.abs(nonzero)).size < nonzero.size):
        return (*_signed_rank_exact(nonzero), {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w = st.wilcoxon(ds)
    return float(w.statistic), float(w.pvalue), {}


def _signed_rank_exact(d: np.ndarray) -> tuple[float, float]:
    """Two-sided signed-rank test with ties or zeros, over all 2^n sign flips.

    What scipy's ``wilcoxon`` does for n <= 13 in that case (a permutation test that
    enumerates every flip), in milliseconds instead of seconds: scipy calls the statistic
    once per flip.
    """
    from scipy import stats as st

    ranks = st.rankdata(np.abs(d))
    observed = float(ranks[d > 0].sum())
    flips = (np.arange(2 ** d.size)[:, None] >> np.arange(d.size)) & 1
    null = flips @ ranks
    p = min(1.0, 2 * min(float(np.mean(null <= observed)), float(np.mean(null >= observed))))
    return min(observed, float(ranks.sum()) - observed), p


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
    magnitude = np.maximum(out["mean"].abs(), data[value].abs().groupby(data[by], sort=False).median().reindex(order))
    flat = (out["std"] <= tol.RTOL * magnitude).to_numpy()     # identical up to rounding: as describe
    out.loc[flat, "std"] = 0.0
    out["sem"] = out["std"] / np.sqrt(np.where(n > 0, n, np.nan))
    tq = np.full(len(out), np.nan)
    many = (n >= 2) & ~flat
    tq[many] = st.t.ppf((1 + confidence) / 2, n[many] - 1)
    out["ci_low"] = out["mean"] - tq * out["sem"]
    out["ci_high"] = out["mean"] + tq * out["sem"]
    out["boot_low"], out["boot_high"] = np.nan, np.nan
    if n_boot > 0 and many.any():
        alpha = (1 - confidence) / 2
        # every group's values as one padded matrix row (no per-group pandas objects)
        row = pd.Index(out.index).get_indexer(data[by])
        col = data.groupby(by, sort=False).cumcount().to_numpy()
        padded = np.full((len(out), int(n.max())), np.nan)
        padded[row, col] = data[value].to_numpy()
        boot = np.full((len(out), 2), np.nan)
        for size in sorted(set(n[many].tolist())):
            rows = np.flatnonzero((n == size) & many)
            idx = np.random.default_rng(seed).integers(0, size, size=(n_boot, size))
            if len(rows) * 8 < size:      # a few large groups: gather, as bootstrap_ci does
                for r in rows:
                    means = padded[r, :size][idx].mean(axis=1)
                    boot[r] = np.quantile(means, [alpha, 1 - alpha])
                continue
            # many groups of one size: resampled means as a product, weights[b, i] = times value
            # i is drawn in resample b / size (one matrix for all of them)
            draws = (np.arange(n_boot)[:, None] * size + idx).ravel()     # bincount: np.add.at is slow
            weights = np.bincount(draws, minlength=n_boot * size).reshape(n_boot, size) / size
            for lo in range(0, len(rows), 64):
                chunk = rows[lo:lo + 64]
                means = padded[chunk, :size] @ weights.T                   # groups x n_boot
                boot[chunk] = np.quantile(means, [alpha, 1 - alpha], axis=1).T
        out["boot_low"], out["boot_high"] = boot[:, 0], boot[:, 1]
    out.index.name = by
    fields = ["n", "mean", "std", "sem", "ci_low", "ci_high", "boot_low", "boot_high", "median", "min", "max"]
    return out[fields].reset_index()
