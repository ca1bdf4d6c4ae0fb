"""Statistics, ranking and tables against hand-computed values and scipy (no store needed)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from analysis import ranking, stats, tables


def test_describe_matches_hand_computed_values():
    s = stats.describe([1.0, 2.0, 3.0, 4.0, 5.0])
    assert s.n == 5 and s.mean == pytest.approx(3.0)
    assert s.std == pytest.approx(math.sqrt(2.5))            # ddof=1, not sqrt(2)
    assert s.sem == pytest.approx(math.sqrt(2.5) / math.sqrt(5))
    half = 2.7764451051977987 * math.sqrt(0.5)               # t_{0.975, 4} * sem
    assert (s.ci_low, s.ci_high) == (pytest.approx(3 - half), pytest.approx(3 + half))
    lo, hi = st.t.interval(0.95, 4, loc=3.0, scale=st.sem([1, 2, 3, 4, 5]))
    assert s.ci_high - s.ci_low == pytest.approx(hi - lo)
    assert (s.median, s.min, s.max) == (3.0, 1.0, 5.0)


def test_describe_confidence_level_changes_width_and_ignores_nan():
    x = [0.2, 0.4, 0.1, 0.7, np.nan]
    s90, s99 = stats.describe(x, confidence=0.90), stats.describe(x, confidence=0.99)
    assert s90.n == 4
    assert (s99.ci_high - s99.ci_low) > (s90.ci_high - s90.ci_low)
    half = st.t.ppf(0.995, 3) * np.std([0.2, 0.4, 0.1, 0.7], ddof=1) / 2
    assert s99.ci_high - s99.mean == pytest.approx(half)


def test_bootstrap_is_seeded_and_sensible():
    rng = np.random.default_rng(1)
    x = rng.normal(10.0, 2.0, size=30)
    a = stats.bootstrap_ci(x, seed=3)
    assert a == stats.bootstrap_ci(x, seed=3)
    assert a != stats.bootstrap_ci(x, seed=4)
    assert a[0] < x.mean() < a[1]
    s = stats.describe(x)
    # for n=30 the percentile bootstrap and the t interval roughly agree (bootstrap a bit narrower)
    assert 0.7 < (a[1] - a[0]) / (s.ci_high - s.ci_low) < 1.1
    # and it matches scipy's percentile bootstrap closely (different resamples, same estimand)
    ref = st.bootstrap((x,), np.mean, method="percentile", n_resamples=10_000, random_state=0).confidence_interval
    assert a[0] == pytest.approx(ref.low, abs=0.1) and a[1] == pytest.approx(ref.high, abs=0.1)


def test_single_value_has_no_spread_and_is_warned_about():
    s = stats.describe([0.5])
    assert s.n == 1 and s.mean == 0.5 and math.isnan(s.std) and math.isnan(s.ci_low)
    assert "n=1" in stats.small_n_warnings("adam", 1)[0]
    assert stats.small_n_warnings("adam", 3) and not stats.small_n_warnings("adam", 5)


def test_paired_comparison_matches_scipy():
    a = np.array([0.91, 0.85, 0.88, 0.93, 0.80, 0.87, 0.90])
    b = np.array([0.89, 0.80, 0.85, 0.90, 0.81, 0.83, 0.86])
    p = stats.paired_comparison(a, b, labels=("A", "B"))
    d = a - b
    assert p.n == 7 and p.mean_diff == pytest.approx(d.mean())
    assert p.t_stat == pytest.approx(st.ttest_rel(a, b).statistic)
    assert p.t_p == pytest.approx(st.ttest_rel(a, b).pvalue)
    assert p.wilcoxon_p == pytest.approx(st.wilcoxon(a, b).pvalue)
    assert p.effect_size_dz == pytest.approx(d.mean() / d.std(ddof=1))
    half = st.t.ppf(0.975, 6) * d.std(ddof=1) / math.sqrt(7)
    assert (p.ci_low, p.ci_high) == (pytest.approx(d.mean() - half), pytest.approx(d.mean() + half))
    assert not p.warnings


def test_paired_comparison_warns_for_few_pairs_and_rejects_mismatch():
    p = stats.paired_comparison([1.0, 2.0, 3.0], [0.5, 1.0, 2.9])
    assert any("cannot reach p < 0.05" in w for w in p.warnings)
    one = stats.paired_comparison([1.0], [0.0])
    assert one.n == 1 and math.isnan(one.t_p) and "no test possible" in one.warnings[0]
    with pytest.raises(ValueError, match="equal lengths"):
        stats.paired_comparison([1.0, 2.0], [1.0])


def test_holm_adjustment_by_hand():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    out = stats.holm([0.2, float("nan")])
    assert out[0] == pytest.approx(0.2) and math.isnan(out[1])


def test_kendall_w_is_one_for_perfect_agreement():
    w, chi2, p = ranking.kendall_w(np.array([[1, 2, 3, 4]] * 5))
    assert w == pytest.approx(1.0)
    assert chi2 == pytest.approx(5 * 3)      # m (n - 1) W
    assert p == pytest.approx(st.chi2.sf(15, 3))


def test_kendall_w_for_constructed_disagreement():
    # rank sums 4, 6, 8 (mean 6): S = 8, W = 12 * 8 / (3^2 * (3^3 - 3)) = 4/9
    r = np.array([[1, 2, 3], [1, 3, 2], [2, 1, 3]])
    w, chi2, p = ranking.kendall_w(r)
    assert w == pytest.approx(4 / 9)
    assert chi2 == pytest.approx(st.friedmanchisquare(*r.T).statistic)
    assert p == pytest.approx(st.friedmanchisquare(*r.T).pvalue)
    # a Latin square: every method gets every rank once -> no agreement at all
    assert ranking.kendall_w(np.array([[1, 2, 3], [2, 3, 1], [3, 1, 2]]))[0] == pytest.approx(0.0)


def test_kendall_w_tie_correction_matches_friedman():
    values = np.array([[1.0, 1.0, 3.0, 4.0], [2.0, 1.0, 3.0, 3.0], [1.0, 2.0, 4.0, 3.0]])
    r = np.vstack([st.rankdata(row) for row in values])
    w, chi2, _ = ranking.kendall_w(r)
    assert chi2 == pytest.approx(st.friedmanchisquare(*values.T).statistic)
    assert 0 < w < 1


def _frame(table: dict[str, list[float]]) -> pd.DataFrame:
    rows = [{"group": g, "labrun.seed": s, "v": v} for g, vals in table.items() for s, v in enumerate(vals)]
    return pd.DataFrame(rows)


def test_rank_methods_winner_win_rate_and_direction():
    f = _frame({"a": [0.1, 0.2, 0.5, 0.1], "b": [0.3, 0.1, 0.6, 0.4], "c": [0.9, 0.8, 0.7, 0.6]})
    r = ranking.rank_methods(f, "v", direction="min")
    assert r.winner == "a" and r.winner_wins == 3 and r.n_seeds == 4
    assert r.mean_rank.to_dict() == pytest.approx({"a": 1.25, "b": 1.75, "c": 3.0})
    assert r.pairwise.loc["a", "b"] == pytest.approx(0.75) and r.pairwise.loc["b", "a"] == pytest.approx(0.25)
    assert r.pairwise.loc["a", "c"] == 1.0
    assert r.kendall_w == pytest.approx(ranking.kendall_w(r.ranks.to_numpy())[0])
    flipped = ranking.rank_methods(f, "v", direction="max")
    assert flipped.winner == "c" and flipped.winner_wins == 4
    assert list(r.table().index) == ["a", "b", "c"]


def test_rank_methods_leaves_out_incomplete_seeds():
    f = _frame({"a": [0.1, 0.2, 0.3], "b": [0.2, 0.3, 0.4]})
    f = f[~((f["group"] == "b") & (f["labrun.seed"] == 2))]
    r = ranking.rank_methods(f, "v")
    assert r.n_seeds == 2 and r.dropped_seeds == [2]
    assert "left out of the ranking" in r.warnings[0]


def test_tables_render_the_same_cells():
    t = pd.DataFrame({"group": ["adam_w", "sgd"], "mean ± std": [tables.pm(0.12345, 0.01), tables.pm(1.0, float("nan"))]})
    md = tables.to_markdown(t)
    assert md.count("\n") == 4 and "0.1235 ± 0.01" in md
    tex = tables.to_latex(t, caption="x_y", bold_row=0)
    assert r"adam\_w" in tex and r"$\pm$" in tex and r"\textbf{adam\_w}" in tex and r"\toprule" in tex
    text = tables.to_text(t)
    assert text.splitlines()[0].startswith("group") and len(text.splitlines()) == 4
    assert tables.pvalue(1e-7) == "<1e-4" and tables.num(float("nan")) == "–"


def test_group_stats_equals_describe_per_group():
    rng = np.random.default_rng(5)
    rows = [{"g": g, "v": float(v)} for g, n in (("x", 4), ("y", 7), ("z", 4), ("w", 1)) for v in rng.normal(size=n)]
    rows.append({"g": "y", "v": float("nan")})
    table = stats.group_stats(pd.DataFrame(rows), "v", "g", n_boot=2_000, seed=7).set_index("g")
    assert list(table.index) == ["x", "y", "z", "w"]
    for g in "xyzw":
        ref = stats.describe([r["v"] for r in rows if r["g"] == g], n_boot=2_000, seed=7).as_dict()
        got = table.loc[g].to_dict()
        for key, value in ref.items():
            assert (math.isnan(value) and math.isnan(got[key])) or got[key] == pytest.approx(value), (g, key)
