"""The ``submitit`` launcher with submitit's local executor: a job killed mid-cell is resumed.

Each cell runs inside its submitit job's process, so SIGKILLing that process is what a node
failure, an OOM kill or a hard preemption does to a Slurm job. The sweep must report the cell
killed (not failed), close its run KILLED, and run it again from its newest checkpoint.
"""
from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from collections import Counter

import pytest

from tests.helpers import PYTHON, REPO, all_runs


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), MLFLOW_DISABLE_TELEMETRY="true", WANDB_MODE="disabled",
                LABRUN_PROGRESS="0")


def test_a_killed_local_job_is_reported_killed_and_a_failed_one_failed():
    from submitit.core.utils import FailedJobError, UncompletedJobError

    from sweeps.launchers.submitit_launcher import _taken_away

    class Fut:
        def __init__(self, state):
            self.state = state

    # the local executor: the controller exits normally when its job process is SIGKILLed
    no_result = UncompletedJobError("Job 123 (task: 0) has not produced any output (state: FINISHED)")
    assert _taken_away(Fut("FINISHED"), no_result)
    scheduler = RuntimeError("job 7 ended")
    assert _taken_away(Fut("CANCELLED by 1000"), scheduler) and _taken_away(Fut("NODE_FAIL"), scheduler)
    assert _taken_away(Fut("PREEMPTED"), scheduler) and not _taken_away(Fut("OUT_OF_MEMORY"), scheduler)
    raised = FailedJobError("Job (task=0) failed during processing with trace: ValueError: boom")
    assert not _taken_away(Fut("FINISHED"), raised) and not _taken_away(Fut("FAILED"), raised)


def _wait_for_checkpointed_cell(store, sweep, timeout: float):
    """A RUNNING cell whose own process (a submitit job) has written a checkpoint."""
    import psutil

    deadline = time.time() + timeout
    while time.time() < deadline and sweep.poll() is None:
        for run in all_runs(store):
            tags = run.data.tags
            pid = int(tags.get("labrun.pid", 0))
            if run.info.status != "RUNNING" or tags.get("labrun.task") != "toy" or pid in (0, sweep.pid):
                continue
            try:
                is_job = "submitit" in " ".join(psutil.Process(pid).cmdline())
            except psutil.Error:
                continue
            if is_job and store.list_artifacts(run.info.run_id, "checkpoints"):
                return run
        time.sleep(0.5)
    raise AssertionError(f"no cell wrote a checkpoint (sweep exit {sweep.poll()})")


@pytest.mark.slow
@pytest.mark.timeout(1800)  # real servers and clusters on a shared 2-core machine
def test_a_job_killed_mid_cell_is_resumed_from_its_checkpoint(store, tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""
        entry: toy
        name: via_submitit_kill
        config: quick
        overrides: {{train.steps: 10, train.eval_every: 2, checkpoint.every: 2, train.sleep_s: 1.0}}
        matrix: {{train.optimizer: [adam, sgd]}}
        seeds: [0]
        parallel: 2
        retries: 1
        launcher: submitit
        submitit: {{folder: {tmp_path}/submitit, cluster: local, timeout_min: 30}}
    """))
    log = open(tmp_path / "sweep.log", "w")
    sweep = subprocess.Popen([PYTHON, "-m", "labrun", "sweep", str(spec)], cwd=tmp_path, env=_env(),
                             stdout=log, stderr=subprocess.STDOUT)
    try:
        victim = _wait_for_checkpointed_cell(store, sweep, timeout=1200)
        os.kill(int(victim.data.tags["labrun.pid"]), signal.SIGKILL)
        assert sweep.wait(900) == 0, (tmp_path / "sweep.log").read_text()[-4000:]
    finally:
        if sweep.poll() is None:
            sweep.kill()
        log.close()
    out = (tmp_path / "sweep.log").read_text()
    assert "(killed, exit 143); attempt 2 resumes" in out, out[-3000:]
    runs = [r for r in all_runs(store) if r.data.tags.get("labrun.task") == "toy"]
    finished = Counter(r.data.tags["labrun.fingerprint"] for r in runs if r.info.status == "FINISHED")
    assert len(finished) == 2 and set(finished.values()) == {1}, finished
    assert store.get_run(victim.info.run_id).info.status == "KILLED"   # closed, not left RUNNING
    (resumed,) = [r for r in runs if r.data.tags.get("labrun.resumed_from") == victim.info.run_id]
    assert resumed.info.status == "FINISHED" and int(resumed.data.tags["labrun.resumed_step"]) >= 2
    steps = [m.step for m in store.get_metric_history(resumed.info.run_id, "loss.total")]
    assert sorted(steps) == sorted(set(steps)) and max(steps) == 10   # the history continued, no step twice
