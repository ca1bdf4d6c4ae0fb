"""One run across many processes: real torchrun groups (gloo on CPU), real kills and resumes.

Every group here is two ranks of the toy task started by ``labrun run toy --nproc 2`` (or two
launchers for two "nodes" on 127.0.0.1), against a real SQLite store.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest

from tests.helpers import PYTHON, REPO, all_runs, one_line_exit_2, run_cli
from tracking.distributed.launch import Topology, exit_code, torchrun_args

QUICK = ["--config", "quick", "--system-metrics", "off"]


def _labrun(*args, **kw):
    return run_cli([PYTHON, "-m", "labrun.cli", *args], **kw)


def _run(store, name):
    (run,) = [r for r in all_runs(store) if r.info.run_name == name]
    return run


def _series(store, run_id, key):
    return [(m.step, m.value) for m in sorted(store.get_metric_history(run_id, key), key=lambda m: m.step)]


def _no_ranks_left(marker: str) -> bool:
    out = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return out.stdout.strip() == ""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------- the launcher's pure parts

def test_torchrun_arguments_for_one_machine_and_for_many():
    one = torchrun_args(Topology(nproc=2), "projects.toy.train", ["--config", "quick"])
    assert "--standalone" in one and "--nproc-per-node=2" in one
    assert one[-4:] == ["--module", "projects.toy.train", "--config", "quick"]
    many = torchrun_args(Topology(nproc=1, nnodes=2, node_rank=1, rdzv_endpoint="10.0.0.1:29400"), "m", [])
    assert {"--rdzv-backend=static", "--rdzv-endpoint=10.0.0.1:29400", "--node-rank=1", "--nnodes=2"} <= set(many)
    assert "--standalone" not in many


def test_the_launcher_exits_as_rank_0_did(capsys):
    class F:
        def __init__(self, code):
            self.exitcode = code

    assert exit_code({0: F(143), 1: F(-9)}, Topology(nproc=2)) == 143     # rank 0 recorded KILLED
    assert exit_code({1: F(1)}, Topology(nproc=2)) == 1
    assert exit_code({1: F(-9)}, Topology(nproc=2)) == 137
    assert "rank 1 ended with signal SIGKILL" in capsys.readouterr().err


def test_strip_topology_leaves_the_task_argv():
    from tracking.argv import strip_topology

    argv = ["--config", "quick", "--nproc", "2", "--nnodes=1", "--set", "seed=1", "--rdzv-endpoint", "h:1"]
    assert strip_topology(argv) == ["--config", "quick", "--set", "seed=1"]


@pytest.mark.parametrize("args,needle", [
    (["ssvae", "--config", "quick", "--nproc", "2"], "trains in one process"),
    (["toy", "--nnodes", "2"], "--rdzv-endpoint HOST:PORT"),
    pytest.param(["toy", "--nproc", "0"], "--nproc needs an integer >= 1", marks=pytest.mark.slow),
    pytest.param(["toy", "--nproc", "2", "--rdzv-endpoint", "nohost"], "must be HOST:PORT", marks=pytest.mark.slow),
    pytest.param(["toy", "--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "127.0.0.1:1"],
                 "must be below --nnodes", marks=pytest.mark.slow),
])
def test_bad_topologies_are_one_line_and_leave_no_run(store, args, needle):
    one_line_exit_2(_labrun("run", *args), needle)
    assert all_runs(store) == []


# ---------------------------------------------------------------- real groups

def test_two_processes_make_one_run_with_metrics_once_per_step(store):
    proc = _labrun("run", "toy", *QUICK, "--nproc", "2", "--name", "ddp", cwd=store.root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = _run(store, "ddp")
    assert len(all_runs(store)) == 1
    assert run.info.status == "FINISHED"
    assert run.data.tags["labrun.world_size"] == "2" and run.data.tags["labrun.dist.backend"] == "gloo"
    steps = [m.step for m in store.get_metric_history(run.info.run_id, "loss.total")]
    assert sorted(steps) == list(range(1, 61))                           # once per step, not per rank
    header = store.download_artifacts(run.info.run_id, "config.yaml", str(store.root / "dl"))
    assert "world_size: 2" in open(header).read()
    assert "labrun.heartbeat.rank1" in run.data.tags                     # rank 1 is seen alive


def test_a_failing_rank_fails_the_run_with_its_traceback(store):
    proc = _labrun("run", "toy", *QUICK, "--nproc", "2", "--name", "r1", "--set", "train.fail_at_step=15",
                   "--set", "train.fail_rank=1", cwd=store.root)
    assert proc.returncode == 1, proc.stderr[-3000:]
    run = _run(store, "r1")
    assert run.info.status == "FAILED"
    assert run.data.tags["labrun.failure"].startswith("rank 1: RuntimeError: injected failure at step 15")
    trace = open(store.download_artifacts(run.info.run_id, "traceback.txt", str(store.root / "dl"))).read()
    assert "rank 1:" in trace and "projects/toy/train.py" in trace
    ours = "\n".join(ln for ln in proc.stderr.splitlines() if not ln.startswith("[rank"))
    assert f"run {run.info.run_id} FAILED (rank 1: RuntimeError" in proc.stderr, ours


@pytest.mark.slow  # three 2-process runs: ~60 s on 2 cores
def test_sigkill_of_rank_1_then_resume_equals_an_uninterrupted_run(store):
    args = [*QUICK, "--nproc", "2", "--set", "checkpoint.every=10"]
    env = dict(os.environ, PYTHONPATH=str(REPO), LABRUN_PROGRESS="0")
    victim = subprocess.Popen([PYTHON, "-m", "labrun.cli", "run", "toy", *args, "--name", "victim",
                               "--set", "train.sleep_s=0.1"], cwd=store.root, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        _kill_rank_after_checkpoint(store, victim, rank=1, checkpoint="cp_20.ptz")
        _, err = victim.communicate(timeout=120)
    finally:
        if victim.poll() is None:
            os.killpg(victim.pid, signal.SIGKILL)
    assert victim.returncode == 143, err.decode()[-3000:]
    killed = _run(store, "victim")
    assert killed.info.status == "KILLED"
    assert "another rank left the process group" in killed.data.tags["labrun.failure"]
    assert _no_ranks_left("--name victim")

    resumed = _labrun("run", "toy", "--nproc", "2", "--system-metrics", "off", "--resume", killed.info.run_id,
                      "--set", "train.sleep_s=0", "--name", "continued", cwd=store.root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    straight = _labrun("run", "toy", *args, "--name", "straight", cwd=store.root)
    assert straight.returncode == 0, straight.stderr[-3000:]
    cont, ref = _run(store, "continued"), _run(store, "straight")
    assert int(cont.data.tags["labrun.resumed_step"]) >= 20
    for key in ("loss.total", "metric.mse.val", "diag.lr"):
        assert _series(store, cont.info.run_id, key) == _series(store, ref.info.run_id, key), key


def _kill_rank_after_checkpoint(store, launcher, *, rank, checkpoint, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline and launcher.poll() is None:
        runs = [r for r in all_runs(store) if r.info.run_name == "victim"]
        if runs and f"checkpoints/{checkpoint}" in {a.path for a in store.list_artifacts(runs[0].info.run_id,
                                                                                          "checkpoints")}:
            break
        time.sleep(0.2)
    children = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True).stdout.split()
    for pid in children:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            if f"RANK={rank}".encode() in fh.read().split(b"\0"):
                os.kill(int(pid), signal.SIGKILL)
                return
    raise AssertionError(f"no rank {rank} among {children} (launcher exit {launcher.poll()})")


@pytest.mark.slow  # waits out a 5 s collective timeout
def test_a_hung_rank_ends_the_run_by_timeout(store):
    proc = _labrun("run", "toy", *QUICK, "--nproc", "2", "--name", "hang", "--set", "train.fail_at_step=5",
                   "--set", "train.fail_rank=1", "--set", "train.fail_kind=hang",
                   "--set", "execution.dist_timeout_s=5", cwd=store.root, timeout=180)
    assert proc.returncode == 1, proc.stderr[-3000:]
    run = _run(store, "hang")
    assert run.info.status == "FAILED"
    assert "execution.dist_timeout_s=5" in run.data.tags["labrun.failure"]
    assert _no_ranks_left("--name hang")


@pytest.mark.slow  # two launchers
def test_two_nodes_on_localhost_make_one_run(store):
    endpoint = f"127.0.0.1:{_free_port()}"
    env = dict(os.environ, PYTHONPATH=str(REPO), LABRUN_PROGRESS="0")
    nodes = [subprocess.Popen([PYTHON, "-m", "labrun.cli", "run", "toy", *QUICK, "--nnodes", "2", "--node-rank",
                               str(r), "--rdzv-endpoint", endpoint, "--name", "nodes"], cwd=store.root, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for r in (0, 1)]
    errs = [p.communicate(timeout=240)[1].decode() for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], errs[0][-2000:] + errs[1][-2000:]
    run = _run(store, "nodes")
    assert run.info.status == "FINISHED" and run.data.tags["labrun.world_size"] == "2"


@pytest.mark.slow  # a sweep of two 2-process cells, then its resume
def test_a_sweep_with_nproc_per_node_runs_every_cell_once(store, tmp_path):
    spec = tmp_path / "ddp.yaml"
    spec.write_text("entry: toy\nconfig: quick\noverrides: {train.steps: 6, checkpoint.every: 2}\n"
                    "matrix: {train.optimizer: [adam, sgd]}\nseeds: [0]\nparallel: 1\nlauncher: local\n"
                    "local: {nproc_per_node: 2}\n")
    first = _labrun("sweep", str(spec), cwd=store.root, timeout=400)
    assert first.returncode == 0, first.stderr[-3000:]
    again = _labrun("sweep", str(spec), cwd=store.root, timeout=400)
    assert "2 skipped as already finished" in again.stdout + again.stderr
    cells = [r for r in all_runs(store) if r.data.tags.get("labrun.task") == "toy"]
    assert len(cells) == 2
    assert {r.data.tags["labrun.world_size"] for r in cells} == {"2"}
    assert {r.info.status for r in cells} == {"FINISHED"}


@pytest.mark.slow  # a run, then a 2-process resume
def test_resuming_with_another_world_size_says_the_data_order_changes(store):
    one = _labrun("run", "toy", *QUICK, "--name", "one", "--set", "train.steps=20", "--set", "checkpoint.every=10",
                  cwd=store.root)
    assert one.returncode == 0, one.stderr[-2000:]
    src = _run(store, "one").info.run_id
    two = _labrun("run", "toy", "--system-metrics", "off", "--nproc", "2", "--resume", src,
                  "--set", "train.steps=30", "--name", "two", cwd=store.root)
    assert two.returncode == 0, two.stderr[-3000:]
    warned = [ln for ln in two.stderr.splitlines() if "resuming a 1-process checkpoint with 2 processes" in ln]
    assert len(warned) == 1


@pytest.mark.slow  # two 2-process runs of real tasks: ~60 s
@pytest.mark.parametrize("task,args", [
    ("dynamics", ["--set", "train.steps=20", "--set", "train.eval_every=10", "--set", "checkpoint.every=10"]),
    ("mutual", ["--set", "train.epochs=2"]),
])
def test_the_study_tasks_train_under_ddp(store, task, args):
    proc = _labrun("run", task, *QUICK, "--nproc", "2", "--name", f"{task}-ddp", *args, cwd=store.root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = _run(store, f"{task}-ddp")
    assert run.info.status == "FINISHED" and run.data.tags["labrun.world_size"] == "2"
    assert [a.path for a in store.list_artifacts(run.info.run_id, "checkpoints")]


@pytest.mark.slow
@pytest.mark.parametrize("task,args,needle", [
    ("dynamics", ["--set", "branch.enabled=true"], "branch.enabled"),
    ("mutual", ["--config", "operator_quick"], "problem=classification"),
])
def test_settings_that_need_one_process_refuse_many(store, task, args, needle):
    args = args if "--config" in args else ["--config", "quick", *args]
    one_line_exit_2(_labrun("run", task, "--nproc", "2", *args, cwd=store.root), needle)
    assert all_runs(store) == []
