"""IRED at equal training steps (issue #17): the sweep spec, its config and the bench's report.

The spec must give every strategy and the feedforward reference the same steps (feedforward
once per seed, not crossed with strategies); the bench's numbers (steps to 1.1x the final
value, paired differences against ``none``) must follow from the runs they read.
"""
from __future__ import annotations

import importlib.util
import subprocess

import pandas as pd
import pytest

from projects.ired.config import Config
from tests.helpers import PYTHON, REPO


def _bench():
    spec = importlib.util.spec_from_file_location("ired_quality", REPO / "bench" / "ired_quality.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_spec_trains_every_method_for_the_same_steps_on_five_seeds():
    from sweeps.matrix import expand
    from sweeps.spec import SweepSpec, load_spec

    cells = expand(load_spec(SweepSpec, REPO / "sweeps/specs/ired_equal_steps.yaml")[0], Config)
    assert len(cells) == 25 and len({c.fingerprint for c in cells}) == 25
    methods = {}
    for c in cells:
        methods.setdefault(c.config.method_tag, set()).add(c.seed)
    assert methods == {m: {0, 1, 2, 3, 4} for m in ("none", "random", "adversarial", "mixed", "feedforward")}
    assert {c.config.train.steps for c in cells} == {1600}
    assert {(c.config.data.n, c.config.model.hidden, c.config.train.batch_size) for c in cells} == {(10, 256, 128)}
    # the bench's --equal-steps N sets the same key, so N=1600 resumes this very sweep
    again = expand(load_spec(SweepSpec, REPO / "sweeps/specs/ired_equal_steps.yaml",
                             ["overrides.train.steps=1600"])[0], Config)
    assert [c.fingerprint for c in again] == [c.fingerprint for c in cells]


def test_steps_to_within_is_the_first_step_near_the_final_value():
    b = _bench()
    curve = pd.DataFrame({"step": [100, 200, 300, 400, 500], "value": [1.0, 0.3, 0.12, 0.105, 0.1]})
    assert b.steps_to_within(curve) == 400           # 0.12 > 1.1 x 0.1; 0.105 is the first within
    assert b.steps_to_within(curve, factor=1.25) == 300
    flat = pd.DataFrame({"step": [10, 20], "value": [0.1, 0.1]})
    assert b.steps_to_within(flat) == 10


def _runs(diffs: dict[str, list[float]]) -> pd.DataFrame:
    base = [0.020, 0.021, 0.019, 0.020, 0.022]
    rows = []
    for method, d in {"none": [0.0] * 5, **diffs}.items():
        for seed, (v, dv) in enumerate(zip(base, d)):
            rows.append({"method": method, "seed": seed, "test": v + dv, "ood": 10 * (v + dv), "val": v,
                         "steps": 100, "reach_steps": 40 + seed, "cpu_s": 3.0, "reach_cpu_s": 1.2,
                         "wall_s": 9.0})
    return pd.DataFrame(rows)


def test_paired_differences_against_none_follow_the_seeds():
    b = _bench()
    main, paired = b.equal_steps_table(_runs({"adversarial": [0.001, 0.0012, 0.0009, 0.0011, 0.001],
                                              "feedforward": [-0.001, 0.002, -0.002, 0.001, 0.0]}))
    assert list(main["method"]) == ["none", "adversarial", "feedforward"]
    assert list(main["seeds"]) == [5, 5, 5]
    assert main.set_index("method").loc["adversarial", "paper (val MSE)"] == "0.00982675"
    adv = paired[(paired["comparison"] == "adversarial − none") & (paired["metric"] == "test")].iloc[0]
    assert adv["pairs"] == 5 and adv["mean diff"] == "0.00104"
    low, high = (float(v) for v in adv["95% CI"].strip("[]").split(","))
    assert 0 < low < 0.00104 < high                   # consistently worse on every seed: CI above 0
    assert adv["paper"] == "+1.56%"
    ff = paired[(paired["comparison"] == "feedforward − none") & (paired["metric"] == "test")].iloc[0]
    low, high = (float(v) for v in ff["95% CI"].strip("[]").split(","))
    assert low < 0 < high and ff["paper"] == "–"      # mixed signs: the CI straddles 0


def test_bad_equal_steps_input_is_one_line_and_exit_2():
    proc = subprocess.run([PYTHON, str(REPO / "bench/ired_quality.py"), "--equal-steps", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--equal-steps must be >= 1" in proc.stderr


@pytest.mark.slow
def test_bench_sweeps_reports_and_logs_the_analysis_run(tmp_path):
    """Two seeds x 5 methods of 20 steps through the real sweep, then the report, twice: the
    second invocation trains nothing (every cell is FINISHED) and reports the same table."""
    import os

    env = dict(os.environ, WANDB_MODE="disabled", MLFLOW_DISABLE_TELEMETRY="true")
    cmd = [PYTHON, str(REPO / "bench/ired_quality.py"), "--equal-steps", "20", "--seeds", "2",
           "--store", str(tmp_path / "store"), "--figures", str(tmp_path / "fig"), "--cost-steps", "2"]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    assert (tmp_path / "fig" / "ired_equal_steps.png").stat().st_size > 0
    assert (tmp_path / "fig" / "ired_equal_steps_cpu.png").stat().st_size > 0
    table = first.stdout[:first.stdout.index("figures:")]
    for method in ("none", "random", "adversarial", "mixed", "feedforward", "adversarial − none"):
        assert f"| {method} |" in table
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "todo" not in second.stderr.splitlines()[0] and "(10 done)" in second.stderr  # nothing rerun
    row = lambda out: next(ln for ln in out.splitlines() if ln.startswith("| none |")).split("|")[2:5]  # noqa: E731
    assert row(second.stdout) == row(first.stdout)   # seeds, test MSE, OOD MSE: read back, not retrained
