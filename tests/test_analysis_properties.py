"""Property tests of ``analysis.stats`` and ``analysis.ranking`` against scipy on generated data.

Whatever the seeds give (n = 0, 1, 2, constant, identical up to rounding, NaN/inf, ties,
one group): every p is in [0, 1] or absent with a reason, every CI contains its estimate or
is absent with a reason, and where scipy's answer is defined it is the same answer. The
number of examples each property ran is counted and printed at the end of the module
(``pytest -s``, or ``--hypothesis-show-statistics``).
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as hs
from scipy import stats as st

from analysis import ranking, stats, tolerance

FAST = settings(max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck))
PANDAS = settings(FAST, max_examples=30)      # a frame per example: ~20 ms each
TIES = settings(FAST, max_examples=40)        # scipy's exact Wilcoxon with ties: 2^n statistic calls
RAN: Counter = Counter()

finite = hs.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False, allow_subnormal=False)
special = hs.sampled_from([math.nan, math.inf, -math.inf])
value = hs.one_of(finite, finite, finite, finite, special)           # mostly finite, sometimes not
tied = hs.sampled_from([0.1, 0.2, 0.3, 0.1 + 0.2, 0.7, 0.7 + 1e-15])  # exact and rounding ties


@pytest.fixture(scope="module", autouse=True)
def _report_counts():
    yield
    print("\nhypothesis examples run: " + ", ".join(f"{k} {n}" for k, n in sorted(RAN.items())))


def _close(a: float, b: float) -> bool:
    return a == pytest.approx(b, rel=1e-6, abs=1e-12)


def _p_ok(p: float, notes: dict, name: str) -> bool:
    return (0.0 <= p <= 1.0) if math.isfinite(p) else bool(notes.get(name))


# ----------------------------------------------------------------------------- describe

@FAST
@given(hs.lists(hs.one_of(value, tied), max_size=12), hs.sampled_from([0.8, 0.95, 0.99]))
def test_describe_intervals_contain_the_mean_or_say_why_not(values, confidence):
    RAN["describe"] += 1
    s = stats.describe(values, confidence=confidence, n_boot=200)
    x = np.array([v for v in values if math.isfinite(v)])
    assert s.n == x.size
    for low, high in ((s.ci_low, s.ci_high), (s.boot_low, s.boot_high)):
        if math.isnan(low):
            assert stats.interval_note(s.n, s.std)
        else:
            assert low <= s.mean <= high
    if s.n >= 2 and s.std > 0:                       # scipy's answer is defined: the same one
        assert _close(s.mean, float(np.mean(x))) and _close(s.std, float(st.tstd(x)))
        assert _close(s.sem, float(st.sem(x)))
        low, high = st.t.interval(confidence, s.n - 1, loc=s.mean, scale=st.sem(x))
        assert _close(s.ci_low, low) and _close(s.ci_high, high)


@FAST
@given(finite, hs.lists(hs.integers(min_value=-4, max_value=4), min_size=2, max_size=10))
def test_values_equal_up_to_rounding_have_no_interval(base, ulps):
    RAN["describe near-constant"] += 1
    values = [base + k * np.spacing(base) for k in ulps]             # the same number, a few ulps apart
    s = stats.describe(values, n_boot=100)
    assert s.std == 0 and math.isnan(s.ci_low) and math.isnan(s.boot_low)
    assert stats.interval_note(s.n, s.std) == stats.IDENTICAL_VALUES


@PANDAS
@given(hs.lists(hs.tuples(hs.sampled_from("abc"), hs.one_of(value, tied)), max_size=20))
def test_group_stats_equals_describe_for_every_group(rows):
    RAN["group_stats"] += 1
    frame = pd.DataFrame(rows, columns=["g", "v"]) if rows else pd.DataFrame({"g": [], "v": []})
    table = stats.group_stats(frame, "v", "g", n_boot=100, seed=3).set_index("g")
    for g in table.index:
        ref = stats.describe([v for k, v in rows if k == g], n_boot=100, seed=3).as_dict()
        for key, want in ref.items():
            got = table.loc[g, key]
            assert (math.isnan(want) and math.isnan(got)) or _close(got, want), (g, key)


# ----------------------------------------------------------------------------- paired

def _paired_checks(x: np.ndarray, y: np.ndarray) -> stats.Paired:
    """The invariants of any paired result, and scipy's answer where it has one."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    p = stats.paired_comparison(x, y)
    for name in ("t_p", "wilcoxon_p"):
        assert _p_ok(getattr(p, name), p.notes, name), (name, p)
    if math.isnan(p.ci_low):
        assert p.notes.get("ci")
    else:
        assert p.ci_low <= p.mean_diff <= p.ci_high
    assert math.isfinite(p.effect_size_dz) or p.notes.get("effect_size_dz")
    ok = np.isfinite(x) & np.isfinite(y)
    xf, yf = x[ok], y[ok]
    if math.isfinite(p.t_p):
        ref = st.ttest_rel(xf, yf)
        assert _close(p.t_p, float(ref.pvalue)) and _close(p.t_stat, float(ref.statistic))
        d = xf - yf
        half = st.t.ppf(0.975, d.size - 1) * st.sem(d)
        assert _close(p.ci_high - p.ci_low, 2 * half)
    if math.isfinite(p.wilcoxon_p) and p.notes.get("wilcoxon_p"):     # identical differences: the sign test
        assert _close(p.wilcoxon_p, float(st.binomtest(int(np.sum(xf > yf)), int(np.sum(xf != yf)), 0.5).pvalue))
    elif math.isfinite(p.wilcoxon_p):
        d = xf - yf
        size = tolerance.scale(xf, yf)
        snapped = np.sign(d) * tolerance.snap(np.append(np.abs(d), 0.0), size)[:-1]
        ref = st.wilcoxon(snapped)
        assert _close(p.wilcoxon_p, float(ref.pvalue)) and _close(p.wilcoxon_stat, float(ref.statistic))
        if np.array_equal(snapped, d):                               # no near-ties: scipy on the raw data
            assert _close(p.wilcoxon_p, float(st.wilcoxon(xf, yf).pvalue))
    return p


@FAST
@given(hs.lists(hs.tuples(value, value), max_size=8))
def test_paired_comparison_against_scipy(pairs):
    RAN["paired"] += 1
    _paired_checks([a for a, _ in pairs], [b for _, b in pairs])


@TIES
@given(hs.lists(hs.tuples(tied, tied), max_size=6))
def test_paired_comparison_with_tied_differences(pairs):
    RAN["paired ties"] += 1
    _paired_checks([a for a, _ in pairs], [b for _, b in pairs])


@FAST
@given(hs.lists(hs.floats(min_value=0.0, max_value=1.0, allow_subnormal=False), min_size=2, max_size=12),
       hs.floats(min_value=-0.5, max_value=0.5, allow_subnormal=False).filter(lambda c: abs(c) > 1e-6))
def test_a_constant_offset_never_gets_a_t_test(base, offset):
    """The issue's case: one image lost on every seed; the offset differs only by rounding."""
    RAN["paired constant offset"] += 1
    x = np.array(base)
    p = _paired_checks(x, x + offset)
    assert math.isnan(p.t_p) and math.isnan(p.ci_low) and math.isnan(p.effect_size_dz)
    assert p.notes["t_p"] == stats.IDENTICAL_DIFFS and p.std_diff == 0
    n = len(base)
    assert _close(p.wilcoxon_p, st.binomtest(n if offset < 0 else 0, n, 0.5).pvalue)   # the sign test
    assert "sign test" in p.notes["wilcoxon_p"]


def test_the_issue_reproduction():
    p = stats.paired_comparison([0.9, 0.8, 0.7], [0.9028, 0.8028, 0.7028])
    assert p.std_diff == 0 and math.isnan(p.t_p) and math.isnan(p.t_stat) and math.isnan(p.effect_size_dz)
    assert math.isnan(p.ci_low) and math.isnan(p.ci_high)
    assert p.wilcoxon_p == pytest.approx(0.25) and "identical differences on every seed" in p.warnings[0]
    doc = p.as_dict()
    assert doc["t_p"] is None and doc["ci_low"] is None and doc["notes"]["t_p"] == stats.IDENTICAL_DIFFS


@FAST
@given(hs.lists(hs.one_of(hs.floats(min_value=0.0, max_value=1.0, allow_subnormal=False), special), max_size=12))
def test_holm_stays_a_probability_and_never_lowers_a_p(pvalues):
    RAN["holm"] += 1
    out = stats.holm(pvalues)
    for raw, adj in zip(pvalues, out):
        if math.isfinite(raw):
            assert raw <= adj <= 1.0
        else:
            assert math.isnan(adj)


# ----------------------------------------------------------------------------- ranking

def _frame(values: np.ndarray) -> pd.DataFrame:
    seeds, methods = values.shape
    return pd.DataFrame([{"labrun.seed": s, "group": f"m{j}", "v": float(values[s, j])}
                         for s in range(seeds) for j in range(methods)])


@PANDAS
@given(hs.integers(min_value=1, max_value=6), hs.integers(min_value=1, max_value=5), hs.data(),
       hs.sampled_from(["min", "max"]))
def test_rank_methods_against_scipy(seeds, methods, data, direction):
    RAN["ranking"] += 1
    values = np.array(data.draw(hs.lists(hs.one_of(finite, tied), min_size=seeds * methods,
                                         max_size=seeds * methods))).reshape(seeds, methods)
    r = ranking.rank_methods(_frame(values), "v", direction=direction)
    sign = 1 if direction == "min" else -1
    for s in range(seeds):
        want = st.rankdata(sign * tolerance.snap(values[s]))
        assert np.allclose(r.ranks.loc[s].to_numpy(), want)
        if np.array_equal(tolerance.snap(values[s]), values[s]):      # no near-ties: scipy on the raw data
            assert np.allclose(r.ranks.loc[s].to_numpy(), st.rankdata(sign * values[s]))
    if math.isnan(r.kendall_w):
        assert r.note and math.isnan(r.p_value)
    else:
        assert -1e-9 <= r.kendall_w <= 1 + 1e-9 and 0 <= r.p_value <= 1 and r.note is None
        if methods >= 3:
            ref = st.friedmanchisquare(*(sign * np.array([tolerance.snap(row) for row in values])).T)
            assert _close(r.chi2, float(ref.statistic)) and _close(r.p_value, float(ref.pvalue))
    rates = r.pairwise.to_numpy()
    assert np.all((rates[~np.isnan(rates)] >= 0) & (rates[~np.isnan(rates)] <= 1))


@PANDAS
@given(hs.lists(hs.floats(min_value=-1e3, max_value=1e3, allow_subnormal=False), min_size=2, max_size=5),
       hs.integers(min_value=2, max_value=5), hs.integers(min_value=-4, max_value=4))
def test_values_equal_up_to_rounding_tie_in_the_ranks(base, seeds, ulps):
    RAN["ranking near-ties"] += 1
    b = base[0]
    assume(abs(b) > 1e-300)             # an ulp is relative only for normal floats (0 ties only with 0)
    rows = np.array([[b, b + ulps * np.spacing(b)] + base[1:]] * seeds)    # m0, m1 a few ulps apart
    r = ranking.rank_methods(_frame(rows), "v")
    assert (r.ranks["m0"] == r.ranks["m1"]).all()


def test_one_group_and_all_ties_have_no_w_and_say_why():
    one = ranking.rank_methods(_frame(np.array([[0.1], [0.2]])), "v")
    assert math.isnan(one.kendall_w) and one.note == "one group: nothing to rank"
    flat = ranking.rank_methods(_frame(np.array([[0.3, 0.1 + 0.2], [0.5, 0.5]])), "v")
    assert math.isnan(flat.kendall_w) and "ties" in flat.note
    single = ranking.rank_methods(_frame(np.array([[0.3, 0.4]])), "v")
    assert math.isnan(single.p_value) and single.note
