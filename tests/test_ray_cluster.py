"""The ``ray`` launcher on a real local Ray cluster: a head and one worker node (``ray start``).

A sweep runs through the cluster; the worker node is killed (SIGKILL: its raylet, the Ray worker
running a cell and the cell itself) once that cell has written a checkpoint, and the sweep
resumes the cell from that checkpoint on the surviving head. Skipped where Ray is not installed.
The fast tests check the cell's task body and what it takes from the driver, without Ray.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import PYTHON, REPO, all_runs
from tracking.config import ConfigError

RAY = shutil.which("ray") or os.path.join(os.path.dirname(PYTHON), "ray")
RAY_STARTUP_TIMEOUT = "The current node timed out during startup"


# --------------------------------------------------------------------------- without a cluster

def test_the_cell_body_runs_the_module_with_the_drivers_environment(tmp_path, monkeypatch):
    from sweeps.launchers.ray_launcher import cell_on_node

    (tmp_path / "labrun_ray_probe.py").write_text(textwrap.dedent("""
        import os, sys
        print("cwd", os.getcwd(), "run", os.environ.get("MLFLOW_RUN_ID"), "uri", os.environ["MLFLOW_TRACKING_URI"])
        print("argv", sys.argv[1:])
        raise SystemExit(int(os.environ["PROBE_EXIT"]))
    """))
    monkeypatch.setenv("MLFLOW_RUN_ID", "the-drivers-run")   # on the node: never adopted by a cell
    log = tmp_path / "cell.log"
    env = {"PYTHONPATH": str(tmp_path), "MLFLOW_TRACKING_URI": "sqlite:///x.db", "PROBE_EXIT": "3"}
    code = cell_on_node("/no/such/python", "labrun_ray_probe", ["--a", "1"], env, str(tmp_path),
                        str(log), 5.0)
    assert code == 3
    text = log.read_text()
    assert f"cwd {tmp_path} run None uri sqlite:///x.db" in text and "argv ['--a', '1']" in text
    env.update(MLFLOW_RUN_ID="the-cells-claimed-run", PROBE_EXIT="0")   # the sweep's claim does reach it
    assert cell_on_node(PYTHON, "labrun_ray_probe", [], env, str(tmp_path), str(log), 5.0) == 0
    assert "run the-cells-claimed-run" in log.read_text()


def test_the_driver_forwards_tracking_and_labrun_variables_and_the_checkout():
    from sweeps.launchers.ray_launcher import forwarded_env

    environ = {"MLFLOW_TRACKING_URI": "http://s:5000", "MLFLOW_TRACKING_PASSWORD": "pw",
               "MLFLOW_RUN_ID": "x", "LABRUN_JOURNAL_DIR": "/j", "HOME": "/root", "PATH": "/bin",
               "PYTHONPATH": "/a", "MY_TOKEN": "t"}
    out = forwarded_env(["MY_TOKEN"], environ, root="/repo")
    assert out["MLFLOW_TRACKING_URI"] == "http://s:5000" and out["MLFLOW_TRACKING_PASSWORD"] == "pw"
    assert out["LABRUN_JOURNAL_DIR"] == "/j" and out["MY_TOKEN"] == "t"
    assert out["PYTHONPATH"] == os.pathsep.join(["/repo", "/a"]) and out["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert not {"MLFLOW_RUN_ID", "HOME", "PATH"} & set(out)


def test_ray_options_validate():
    from sweeps.launchers import launcher_class

    cls = launcher_class("ray")
    opts = cls.parse_options({"address": "127.0.0.1:6379", "num_cpus": 2, "forward_env": ["X"]})
    assert (opts.address, opts.num_cpus, opts.forward_env) == ("127.0.0.1:6379", 2.0, ["X"])
    with pytest.raises(ConfigError, match=r"launcher 'ray': num_cpus: Input should be a valid number"):
        cls.parse_options({"num_cpus": "many"})


# --------------------------------------------------------------------------- a real cluster

def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _node_cmd(head_port: int, temp_dir: str | None) -> list[str]:
    """``ray start`` for one node, in the foreground (``--block``: its pid stops it), on free ports."""
    metrics, listen, grpc, runtime, client, dash = _free_ports(6)
    cmd = [RAY, "start", "--num-cpus=1", "--disable-usage-stats", "--block",
           f"--metrics-export-port={metrics}", f"--dashboard-agent-listen-port={listen}",
           f"--dashboard-agent-grpc-port={grpc}", f"--runtime-env-agent-port={runtime}"]
    if temp_dir:
        return cmd + ["--head", f"--port={head_port}", "--node-ip-address=127.0.0.1",
                      "--include-dashboard=false", f"--temp-dir={temp_dir}",
                      f"--ray-client-server-port={client}", f"--dashboard-port={dash}"]
    return cmd + [f"--address=127.0.0.1:{head_port}"]


def _start_node(cmd: list[str], log: Path, timeout: float = 300, attempts: int = 3) -> subprocess.Popen:
    """Start a node and wait until it is up. A loaded machine starts a node's agents slowly:
    the agents get a long timeout here, but Ray's own 30 s wait for the raylet to register is
    fixed, so a node that misses it is started again (on fresh ports)."""
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_agent_register_timeout_ms="600000")
    for attempt in range(1, attempts + 1):
        proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        deadline = time.time() + timeout
        try:
            while "Ray runtime started" not in log.read_text():
                if proc.poll() is not None or time.time() > deadline:
                    break
                time.sleep(1)
            else:
                return proc
        except BaseException:  # interrupted while waiting: the node must not outlive the test
            _stop_group(proc)
            raise
        _stop_group(proc)
        text = log.read_text()
        if attempt == attempts and RAY_STARTUP_TIMEOUT in text:  # Ray's limit, not labrun's
            pytest.skip(f"`ray start` missed Ray's fixed 30 s node-registration wait {attempts} times "
                        f"(load average {os.getloadavg()[0]:.0f} on {os.cpu_count()} CPUs)")
        if attempt == attempts:
            pytest.fail(f"`ray start` did not come up in {attempts} attempts:\n{text[-3000:]}")
        cmd = _fresh_ports(cmd)
    raise AssertionError("unreachable")


def _fresh_ports(cmd: list[str]) -> list[str]:
    """The same ``ray start`` with new free ports for everything but the head's GCS port."""
    keep = ("--port=", "--address=")
    out = []
    for arg in cmd:
        if arg.startswith("--") and "port=" in arg and not arg.startswith(keep):
            arg = f"{arg.split('=')[0]}={_free_ports(1)[0]}"
        out.append(arg)
    return out


def _stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, wait_s: float = 30) -> None:
    """Stop a node by the process group its ``ray start --block`` leads (never ``ray stop``,
    which would stop every Ray on the machine)."""
    for s, w in ((sig, wait_s), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, s)
        except ProcessLookupError:
            return
        try:
            proc.wait(w)
        except subprocess.TimeoutExpired:
            continue
        time.sleep(0.5)  # the group's other members may outlive the leader by a moment
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def ray_cluster(tmp_path):
    pytest.importorskip("ray", reason="ray is not installed: pip install 'labrun[ray]'")
    temp = tempfile.mkdtemp(prefix="lr-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 chars
    (port,) = _free_ports(1)
    head = worker = None
    try:
        head = _start_node(_node_cmd(port, temp), tmp_path / "head.log")
        worker = _start_node(_node_cmd(port, None), tmp_path / "worker.log")
        yield {"address": f"127.0.0.1:{port}", "head": head, "worker": worker}
    finally:
        for proc in (worker, head):
            if proc is not None:
                _stop_group(proc)
        shutil.rmtree(temp, ignore_errors=True)


def _on_node(pid: int, node: subprocess.Popen) -> bool:
    """Whether the cell process ``pid`` runs under that node's raylet (cell -> Ray worker -> raylet)."""
    import psutil

    try:
        raylet = psutil.Process(pid).parent().parent()
        return os.getpgid(raylet.pid) == node.pid
    except (psutil.Error, AttributeError, ProcessLookupError):
        return False


def _kill_node_with_cell(node: subprocess.Popen, cell_pid: int) -> None:
    """A node crash: SIGKILL its processes, the Ray worker running the cell and the cell."""
    groups = {node.pid, os.getpgid(cell_pid)}
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
    node.wait(30)


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO), MLFLOW_DISABLE_TELEMETRY="true", WANDB_MODE="disabled",
                LABRUN_PROGRESS="0")


@pytest.mark.slow
@pytest.mark.timeout(1800)  # real servers and clusters on a shared 2-core machine
def test_a_sweep_survives_a_killed_worker_node_and_resumes_the_cell(store, tmp_path, ray_cluster):
    spec = tmp_path / "spec.yaml"
    spec.write_text(textwrap.dedent(f"""
        entry: toy
        name: via_ray
        config: quick
        overrides: {{train.steps: 10, train.eval_every: 2, checkpoint.every: 2, train.sleep_s: 1.0}}
        matrix: {{train.optimizer: [adam, sgd]}}
        seeds: [0]
        parallel: 2
        retries: 1
        launcher: ray
        ray: {{address: "{ray_cluster['address']}"}}
    """))
    log = open(tmp_path / "sweep.log", "w")
    sweep = subprocess.Popen([PYTHON, "-m", "labrun", "sweep", str(spec)], cwd=tmp_path, env=_env(),
                             stdout=log, stderr=subprocess.STDOUT)
    try:
        victim = _wait_for_checkpointed_cell_on(store, ray_cluster["worker"], sweep, timeout=1200)
        _kill_node_with_cell(ray_cluster["worker"], int(victim.data.tags["labrun.pid"]))
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
    (resumed,) = [r for r in runs if r.data.tags.get("labrun.resumed_from") == victim.info.run_id]
    assert resumed.info.status == "FINISHED" and int(resumed.data.tags["labrun.resumed_step"]) >= 2
    assert resumed.data.tags["labrun.fingerprint"] == victim.data.tags["labrun.fingerprint"]
    assert store.get_run(victim.info.run_id).info.status == "KILLED"   # closed, not left RUNNING
    steps = [m.step for m in store.get_metric_history(resumed.info.run_id, "loss.total")]
    assert sorted(steps) == sorted(set(steps)) and max(steps) == 10   # the history continued, no step twice


def _wait_for_checkpointed_cell_on(store, node, sweep, timeout: float):
    deadline = time.time() + timeout
    while time.time() < deadline and sweep.poll() is None:
        for run in all_runs(store):
            tags = run.data.tags
            if run.info.status != "RUNNING" or tags.get("labrun.task") != "toy" or "labrun.pid" not in tags:
                continue
            if _on_node(int(tags["labrun.pid"]), node) and store.list_artifacts(run.info.run_id, "checkpoints"):
                return run
        time.sleep(0.5)
    raise AssertionError(f"no cell on the worker node wrote a checkpoint (sweep exit {sweep.poll()})")
