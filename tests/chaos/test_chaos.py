"""Fault injection: each scenario of tests/chaos/harness.py for a few rounds, everything at 0.

Slow (real launchers, real SIGKILLs, minutes per round on a loaded machine); ``bench/chaos.py``
runs many more rounds and prints the counts instead of asserting them. A failing round
prints its seed: ``python bench/chaos.py --replay SCENARIO:SEED`` runs it again.
``LABRUN_CHAOS_SEED`` changes the base seed, ``LABRUN_CHAOS_ROUNDS`` the rounds per scenario.
"""
from __future__ import annotations

import os

import pytest

from tests.chaos.harness import SCENARIOS, WITHDRAWN, Chaos, round_seed
from tracking import tags as T

ROUNDS = int(os.environ.get("LABRUN_CHAOS_ROUNDS", "2"))
SEED = int(os.environ.get("LABRUN_CHAOS_SEED", "0"))


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_killed_then_rerun_leaves_every_cell_finished_once(store, tmp_path, scenario, capsys):
    chaos = Chaos(tmp_path / "chaos", log=lambda line: _say(capsys, line))
    offset = SCENARIOS.index(scenario) * 1000
    results = [chaos.round(offset + i, scenario, round_seed(SEED, offset + i)) for i in range(ROUNDS)]
    for r in results:
        assert (r.lost, r.stuck, r.orphans, r.mismatched) == (0, 0, 0, 0), r.line()
        assert r.rerun_code in (None, 0), r.line()
    duplicated = [r for r in results if r.duplicated]
    if duplicated and scenario == "two_workers" and not hasattr(T, "WITHDRAWN"):
        pytest.xfail(f"two sweep workers do not claim cells yet ({WITHDRAWN} not defined): "
                     + "; ".join(r.line() for r in duplicated))
    assert not duplicated, "; ".join(r.line() for r in duplicated)


def _say(capsys, line: str) -> None:
    with capsys.disabled():
        print(line, flush=True)
