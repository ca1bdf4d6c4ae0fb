"""What a fingerprint means: the experiment, not how it was executed."""
from __future__ import annotations

import pytest

import os
import textwrap

from tests.helpers import PYTHON, REPO, all_runs, run_cli


def _sweep(tmp_path, every: int):
    path = tmp_path / f"spec_{every}.yaml"
    path.write_text(textwrap.dedent(f"""
        entry: toy
        name: cadence
        config: quick
        overrides: {{train.steps: 4, train.eval_every: 2, checkpoint.every: {every}}}
        matrix: {{train.optimizer: [adam, sgd]}}
        seeds: [0]
    """))
    env = {"PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), "LABRUN_PROGRESS": "0"}
    return run_cli([PYTHON, "-m", "labrun", "sweep", str(path)], env_extra=env, timeout=300)


@pytest.mark.slow
def test_changing_the_checkpoint_interval_reruns_nothing(store, tmp_path):
    first = _sweep(tmp_path, every=2)
    assert first.returncode == 0, first.stderr[-2000:]
    cells = [r for r in all_runs(store) if r.data.tags.get("labrun.task") == "toy"]
    assert len(cells) == 2 and {r.info.status for r in cells} == {"FINISHED"}

    second = _sweep(tmp_path, every=3)  # only an execution setting differs
    assert second.returncode == 0, second.stderr[-2000:]
    after = [r for r in all_runs(store) if r.data.tags.get("labrun.task") == "toy"]
    assert len(after) == 2, "a finished cell was run again"
    # the params still say how each run was executed
    assert {r.data.params["checkpoint.every"] for r in after} == {"2"}
