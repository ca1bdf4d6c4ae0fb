"""Claimed cells: concurrent sweep workers on one spec and store run each cell exactly once.

Real ``labrun sweep`` processes on a real SQLite store; the claim rule itself (earliest live
claim wins, a stale one is taken over) in-process on real runs.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest
import yaml

from tests.helpers import REPO, all_runs

SPEC = {"entry": "toy", "config": "quick", "experiment": "claims",
        "overrides": {"train.steps": 4, "train.eval_every": 2, "train.sleep_s": 0.05},
        "matrix": {"train.optimizer": ["adam", "sgd"], "train.lr": [0.01, 0.02, 0.03]},
        "seeds": [0], "retries": 1, "parallel": 1, "launcher": "local"}


def _workers(store, spec_path, n):
    env = dict(os.environ, PYTHONPATH=str(REPO), LABRUN_PROGRESS="0", LABRUN_CLAIM_SETTLE_S="0.3")
    procs = [subprocess.Popen([sys.executable, "-m", "labrun", "sweep", str(spec_path)], cwd=store.root,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(n)]
    return [(p.wait(timeout=600), p.stdout.read()) for p in procs]


@pytest.mark.slow
@pytest.mark.parametrize("n_workers", [2, 3])
def test_concurrent_workers_run_each_cell_exactly_once(store, tmp_path, n_workers):
    from mlflow.entities import ViewType

    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    results = _workers(store, path, n_workers)
    assert all(code == 0 for code, _ in results), results
    runs = [r for r in all_runs(store, ["claims"]) if r.data.tags.get("labrun.fingerprint")]
    fps = [r.data.tags["labrun.fingerprint"] for r in runs]
    assert len(runs) == 6 and len(set(fps)) == 6  # every cell once, none twice
    assert {r.info.status for r in runs} == {"FINISHED"}
    workers = {r.data.tags.get("labrun.claim") for r in runs}
    assert len(workers) >= 1
    exp = store.get_experiment_by_name("claims").experiment_id
    every = store.search_runs([exp], run_view_type=ViewType.ALL, max_results=1000)
    withdrawn = [r for r in every if r.data.tags.get("labrun.withdrawn")]
    assert all(r.info.lifecycle_stage == "deleted" and r.info.status == "KILLED" for r in withdrawn)
    assert not [r for r in every if r.info.status == "RUNNING"]


# ----------------------------------------------------------------------------- the rule

class _Cell:
    def __init__(self, fp):
        self.fingerprint, self.index, self.label = fp, 0, fp


def _job(exp_id, parent, fp):
    from sweeps.launchers.base import Job

    return Job(key=uuid.uuid4().hex, entry="toy", module="projects.toy.train", config=None, overrides=[],
               experiment="claims", experiment_id=exp_id, parent_run_id=parent, run_name=f"cell-{fp}",
               cell=_Cell(fp))


def _claims(store, exp_id):
    from sweeps.claims import Claims
    from sweeps.ledger import Ledger

    return Claims(store, Ledger(store, exp_id, "toy"), "toy")


@pytest.fixture
def exp(store, monkeypatch):
    monkeypatch.setenv("LABRUN_CLAIM_SETTLE_S", "0.05")
    exp_id = store.create_experiment("claims")
    parent = store.create_run(exp_id).info.run_id
    return exp_id, parent


def test_the_rule_one_function_for_claims_and_parents():
    from tracking.store import elect_earliest

    assert elect_earliest([]) is None
    assert elect_earliest([(20, "a"), (10, "z"), (10, "b")]) == "b"   # earliest start, then run id
    assert elect_earliest(iter([(5, "x")])) == "x"


def test_the_earliest_live_claim_wins_and_the_later_one_is_withdrawn(store, exp):
    exp_id, parent = exp
    first = _job(exp_id, parent, "fp1")
    won, lost = _claims(store, exp_id).claim([first])
    assert won == [first] and not lost
    second = _job(exp_id, parent, "fp1")
    won, lost = _claims(store, exp_id).claim([second])
    assert not won and lost == [second]
    loser = store.get_run(second.run_id)
    assert loser.data.tags["labrun.withdrawn"] == first.run_id
    assert loser.info.status == "KILLED" and loser.info.lifecycle_stage == "deleted"
    assert os.environ.get("MLFLOW_RUN_ID") is None  # the claim goes to the cell's env, not ours
    assert first.env["MLFLOW_RUN_ID"] == first.run_id


def test_claims_made_at_the_same_moment_agree_on_one_winner(store, exp):
    import threading

    exp_id, parent = exp
    jobs = [_job(exp_id, parent, "fp2") for _ in range(4)]
    outcome = {}

    def claim(job):
        outcome[job.key] = _claims(store, exp_id).claim([job])[0]

    threads = [threading.Thread(target=claim, args=(j,)) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(bool(v) for v in outcome.values()) == 1


def test_a_stale_claim_is_taken_over_and_a_finished_cell_is_never_claimed(store, exp):
    exp_id, parent = exp
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    store.create_run(exp_id, tags={"labrun.task": "toy", "labrun.fingerprint": "fp3",
                                   "labrun.host": socket.gethostname(), "labrun.pid": str(dead.pid),
                                   "labrun.heartbeat": f"{time.time():.0f}"})
    job = _job(exp_id, parent, "fp3")
    won, _ = _claims(store, exp_id).claim([job])
    assert won == [job]  # the crashed worker's claim no longer holds the cell
    store.set_terminated(job.run_id, "FINISHED")
    late = _job(exp_id, parent, "fp3")
    won, lost = _claims(store, exp_id).claim([late])
    assert not won and store.get_run(late.run_id).data.tags["labrun.withdrawn"] == job.run_id


def test_release_ends_a_claim_whose_process_never_took_it_over(store, exp):
    exp_id, parent = exp
    job = _job(exp_id, parent, "fp4")
    claims = _claims(store, exp_id)
    claims.claim([job])
    claims.release(job.run_id, "FAILED", "CellProcess: exited 1 before ending its run")
    run = store.get_run(job.run_id)
    assert run.info.status == "FAILED" and run.data.tags["labrun.failure"].startswith("CellProcess")
    claims.release(job.run_id, "KILLED", "again")  # an ended run is left as it is
    assert store.get_run(job.run_id).info.status == "FAILED"
