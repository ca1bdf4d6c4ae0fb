"""Methods compared within blocks (Demšar 2006): the statistics against their published values
and scipy/scikit-posthocs, and `labrun analyze` choosing blocks on a real synthetic store."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis import blocked, synthetic
from tests.helpers import PYTHON, run_cli

# Demšar (2006), Table 5(a): critical values q_0.05 of the two-tailed Nemenyi test.
DEMSAR_Q05 = {2: 1.960, 3: 2.343, 4: 2.569, 5: 2.728, 6: 2.850, 7: 2.949, 8: 3.031, 9: 3.102, 10: 3.164}


@pytest.mark.parametrize("k", sorted(DEMSAR_Q05))
def test_the_critical_difference_is_demsars(k):
    n = 14
    assert blocked.critical_difference(k, n) == pytest.approx(DEMSAR_Q05[k] * math.sqrt(k * (k + 1) / (6 * n)),
                                                              abs=2e-3)


# 14 blocks whose rank sums are 44, 28, 40.5, 27.5: Demšar's average ranks x 14 (one tied block).
DEMSAR_RANKS = [[1, 2, 3.5, 3.5], [3, 4, 2, 1], [4, 1, 3, 2], [3, 4, 2, 1], [2, 3, 4, 1], [4, 3, 2, 1],
                [4, 1, 3, 2], [4, 1, 2, 3], [4, 2, 3, 1], [1, 2, 3, 4], [3, 1, 4, 2], [4, 1, 2, 3],
                [4, 2, 3, 1], [3, 1, 4, 2]]


def test_demsars_worked_example_friedman_and_iman_davenport():
    """Section 3.2.2: 4 methods, 14 data sets, average ranks 3.143/2.000/2.893/1.964 give
    chi2_F = 9.28, F_F = 3.69 and CD = 1.25 (the one tied block's correction moves chi2 by <1%)."""
    ranks = np.array(DEMSAR_RANKS, dtype=float)
    assert ranks.mean(axis=0) == pytest.approx([3.143, 2.000, 2.893, 1.964], abs=1e-3)
    chi2, p, f, f_p = blocked.friedman(ranks)
    assert chi2 == pytest.approx(9.28, abs=0.1) and f == pytest.approx(3.69, abs=0.1)
    assert 0 < f_p < 0.05 and 0 < p < 0.05
    assert blocked.critical_difference(4, 14) == pytest.approx(1.25, abs=0.01)


def test_friedman_matches_scipy_and_nemenyi_agrees_with_the_cd():
    from scipy.stats import friedmanchisquare

    rng = np.random.default_rng(3)
    for k, n in [(3, 8), (4, 14), (6, 30)]:
        values = rng.normal(size=(n, k)) + np.linspace(0, 1.2, k)
        ranks = pd.DataFrame(values).rank(axis=1).to_numpy()
        chi2, p, _, _ = blocked.friedman(ranks)
        ref = friedmanchisquare(*values.T)
        assert chi2 == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue)
        frame = pd.DataFrame([{"block": b, "group": f"m{j}", "v": values[b, j]} for b in range(n) for j in range(k)])
        res = blocked.compare_blocks(frame, "v")
        gap = np.abs(res.mean_rank.to_numpy()[:, None] - res.mean_rank.to_numpy()[None, :])
        names = list(res.mean_rank.index)
        for i in range(k):
            for j in range(i + 1, k):
                p_ij = res.nemenyi_p.at[names[i], names[j]]
                if abs(gap[i, j] - res.cd) > 0.02:       # away from the boundary, CD and p agree
                    assert (gap[i, j] > res.cd) == (p_ij < 0.05), (k, n, names[i], names[j], gap[i, j], res.cd, p_ij)


def test_holm_against_a_control_by_hand():
    mean_rank = pd.Series({"a": 1.5, "b": 2.2, "c": 3.1, "d": 3.2})
    out = blocked.holm_vs_control(mean_rank, "a", 20)
    se = math.sqrt(4 * 5 / (6 * 20))
    from scipy.stats import norm

    p = {m: 2 * norm.sf((mean_rank[m] - 1.5) / se) for m in "bcd"}
    assert out.loc["c", "z"] == pytest.approx((3.1 - 1.5) / se)
    order = sorted(p, key=p.get)                         # Holm: step down from the smallest p
    running = 0.0
    for i, m in enumerate(order):
        running = max(running, min(1.0, (3 - i) * p[m]))
        assert out.loc[m, "holm_p"] == pytest.approx(running)


def test_cliques_are_maximal_runs_within_one_cd():
    ranks = pd.Series({"a": 1.0, "b": 1.4, "c": 2.0, "d": 3.5})
    assert blocked.cliques(ranks, 0.7) == [["a", "b"], ["b", "c"]]
    assert blocked.cliques(ranks, 0.1) == []


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    root = tmp_path_factory.mktemp("blocked")
    uri = synthetic.sqlite_store(root / "mlflow.db", tmp_path_factory.getbasetemp() / "blocked-template")
    synthetic.build_store(uri, "syn", 4 * 5 * 12, n_metrics=2, n_params=6)   # 4 methods x 12 cells x 5 seeds
    return root, uri


def _analyze(syn, *extra):
    root, uri = syn
    return run_cli([PYTHON, "-m", "labrun", "analyze", "-e", "syn", "-m", "metric.m00.val", "--no-log",
                    "--out", str(root / "out"), *extra], cwd=root, timeout=180, env_extra={"MLFLOW_TRACKING_URI": uri})


def test_analyze_compares_methods_within_cells_by_default(syn):
    proc = _analyze(syn)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "comparing labrun.method within each params.train.cell (12 blocks" in proc.stdout
    assert "Friedman chi2 = " in proc.stdout and "Nemenyi CD (alpha 0.05) = " in proc.stdout
    doc = json.loads((syn[0] / "out" / "stats.json").read_text())
    b = doc["blocked"]
    assert b["n_blocks"] == 12 and b["methods"] == ["a", "b", "c", "d"]   # the generator's method order
    assert b["friedman"]["p_value"] < 1e-6 and b["holm_vs_control"]["control"] == "a"
    assert (syn[0] / "out" / "figures" / "cd_metric_m00_val.png").stat().st_size > 5000
    assert len(pd.read_csv(syn[0] / "out" / "blocks.csv")) == 12


def test_all_groups_keeps_the_old_ranking_and_the_options_refuse_nonsense(syn):
    proc = _analyze(syn, "--all-groups")
    assert proc.returncode == 0 and "comparing" not in proc.stdout and "Friedman" not in proc.stdout
    assert "48 groups" in proc.stdout                    # 4 methods x 12 cells ranked against each other
    for extra, needle in [(["--control", "zz"], "--control: no method 'zz'; methods: a, b, c, d"),
                          (["--compare-by", "params.model.p05"], "every run has the same value"),
                          (["--within", "params.nope"], "params.nope")]:
        proc = _analyze(syn, *extra)
        assert proc.returncode == 2 and needle in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_blocks_that_never_hold_every_method_say_so(syn):
    """Blocks by train.method, which names the method: each block holds one of the four."""
    proc = _analyze(syn, "--compare-by", "labrun.method", "--within", "params.train.method")
    assert proc.returncode == 0, proc.stderr
    assert "Friedman test undefined: 0 block(s) hold every method" in proc.stdout
    assert "4 block(s) lack a method" in proc.stdout


def test_stats_json_stays_small_with_thousands_of_groups(tmp_path):
    """The all-groups ranking of 2,000 groups wrote a 148 MB stats.json (a 2000 x 2000 matrix)."""
    from analysis.report import AnalyzeOptions, analyze

    uri = synthetic.sqlite_store(tmp_path / "m.db", tmp_path / "tpl")
    synthetic.build_store(uri, "big", 4 * 2 * 300, n_metrics=1, n_params=4, seeds=2)
    analyze(AnalyzeOptions(experiments=["big"], metric="metric.m00.val", tracking_uri=uri, log_run=False,
                           curves=False, out_dir=tmp_path / "out", all_groups=True, n_boot=200))
    doc = json.loads((tmp_path / "out" / "stats.json").read_text())
    ranking = doc["rankings"]["all"]
    assert len(ranking["pairwise_win_rate"]) == 50 and "50 best of 1200" in ranking["pairwise_note"]
    assert (tmp_path / "out" / "stats.json").stat().st_size < 1_000_000
