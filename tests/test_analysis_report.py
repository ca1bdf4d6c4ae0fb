"""The analyze pipeline in-process on bulk-built stores: labels, conditions, directions."""
from __future__ import annotations

import pytest

from analysis import report, synthetic
from tracking.config import ConfigError


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    root = tmp_path_factory.mktemp("analysis_report")
    uri = synthetic.sqlite_store(root / "mlflow.db", tmp_path_factory.getbasetemp() / "analysis-template")
    # methods a, b x 3 seeds x cells 0..3; cells 0, 2 are condition c0 and 1, 3 are c1
    synthetic.build_store(uri, "syn", 2 * 3 * 4, n_metrics=2, n_params=4, steps=3, methods=("a", "b"), seeds=3,
                          conditions=("c0", "c1"))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        yield uri


def _opts(uri, **kw):
    base = dict(experiments=["syn"], metric="metric.m00.val", log_run=False, curves=False, n_boot=200,
                tracking_uri=uri)
    base.update(kw)
    return report.AnalyzeOptions(**base)


def test_by_default_methods_are_compared_within_each_cell_and_condition(syn):
    res = report.analyze(_opts(syn))
    assert sorted(res.summary["group"]) == ["a", "b"]
    assert "comparing labrun.method within each labrun.condition, params.train.cell (4 blocks" in res.text
    assert "methods across 4 blocks" in res.text and "a (control)" in res.text


def test_cells_sharing_a_method_get_distinct_labels_and_conditions_rank_apart(syn):
    res = report.analyze(_opts(syn, all_groups=True))
    labels = list(res.summary["group"])
    assert sorted(labels) == ["a/c0 (train.cell=0)", "a/c0 (train.cell=2)", "a/c1 (train.cell=1)",
                              "a/c1 (train.cell=3)", "b/c0 (train.cell=0)", "b/c0 (train.cell=2)",
                              "b/c1 (train.cell=1)", "b/c1 (train.cell=3)"]
    assert [lab.split(" ")[0].split("/")[1] for lab in labels] == ["c0"] * 4 + ["c1"] * 4   # conditions apart
    assert set(res.summary["n"]) == {3}
    assert set(res.rankings) == {"c0", "c1"}
    for r in res.rankings.values():
        assert r.n_seeds == 3 and r.n_methods == 4 and r.winner.startswith("a/")
    assert "rank consistency" in res.text and "[c0]" in res.text


def test_direction_defaults_from_the_name_and_can_be_forced(syn):
    acc = report.analyze(_opts(syn, metric="metric.acc", group_by=["method"]))
    assert acc.rankings["all"].direction == "max" and acc.rankings["all"].winner == "a"
    assert acc.rankings["all"].kendall_w == pytest.approx(1.0)
    forced = report.analyze(_opts(syn, metric="metric.acc", group_by=["method"], direction="min"))
    assert forced.rankings["all"].winner == "b"
    assert list(forced.summary["group"]) == ["b", "a"]              # best (lowest) first
    assert "higher is better" in acc.text and "lower is better" in forced.text


def test_best_value_uses_the_history(syn):
    final = report.analyze(_opts(syn, group_by=["method"]))
    best = report.analyze(_opts(syn, group_by=["method"], value="best"))
    # the synthetic series falls by 0.01 a step plus noise: best (min) <= final for every run
    f = final.frame.set_index("run_id")["final.metric.m00.val"]
    b = best.frame.set_index("run_id")["best.metric.m00.val"]
    assert (b <= f + 1e-12).all() and (b < f).any()


def test_option_errors_are_config_errors(syn):
    with pytest.raises(ConfigError, match="--value must be final or best"):
        report.analyze(_opts(syn, value="mean"))
    with pytest.raises(ConfigError, match="--confidence must be between 0 and 1"):
        report.analyze(_opts(syn, confidence=95))


def test_compare_tests_exactly_the_named_pair(syn):
    res = report.analyze(_opts(syn, group_by=["method"], compare=["b", "a"]))
    assert [(p.a, p.b, p.n) for p in res.paired] == [("b", "a", 3)]
    # paired by seed; the cells of one seed are averaged first
    per_seed = res.frame.pivot_table(index="labrun.seed", columns="group", values="final.metric.m00.val")
    assert res.paired[0].mean_diff == pytest.approx((per_seed["b"] - per_seed["a"]).mean())
    assert "paired comparisons (A − B" in res.text
    with pytest.raises(ConfigError, match="--compare: no group 'c'"):
        report.analyze(_opts(syn, group_by=["method"], compare=["a", "c"]))
