"""Helpers for tests: list runs in a store, run a command in a real subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def all_runs(client, experiment_names=None):
    """Every run in the store (all experiments unless names are given)."""
    exps = client.search_experiments()
    ids = [e.experiment_id for e in exps if experiment_names is None or e.name in experiment_names]
    return client.search_runs(ids, max_results=10_000) if ids else []


def run_cli(args, *, env_extra=None, cwd=None, timeout=300, check=False):
    """Run a command in a real subprocess with the test's tracking env; returns CompletedProcess."""
    env = dict(os.environ)
    env.update(env_extra or {})
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    # `mlflow run --env-manager local` runs `python ...` from PATH: make it this interpreter.
    env["PATH"] = str(Path(PYTHON).parent) + os.pathsep + env.get("PATH", "")
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def sigkill_after_checkpoint(store, module, argv, checkpoint, *, reference, timeout=240):
    """The resume tests' victim: run ``python -m module argv`` in a real subprocess and SIGKILL
    it as soon as its run holds ``checkpoints/<checkpoint>``; then call ``reference()`` (the
    uninterrupted run, in this process). Killing first keeps a loaded machine from letting the
    victim finish while the reference hogs this process. Returns ``(victim_run, reference_run)``
    ids; fails if the victim finished before it could be killed."""
    import signal
    import time

    env = dict(os.environ, PYTHONPATH=str(REPO), LABRUN_PROGRESS="0")
    victim = subprocess.Popen([PYTHON, "-m", module, *argv], cwd=store.root, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        victim_id, deadline = None, time.time() + timeout
        while time.time() < deadline and victim.poll() is None:
            runs = [r for r in all_runs(store) if r.data.tags.get("labrun.pid") == str(victim.pid)]
            if runs:
                victim_id = runs[0].info.run_id
                if f"checkpoints/{checkpoint}" in {a.path for a in store.list_artifacts(victim_id, "checkpoints")}:
                    break
            time.sleep(0.2)
        assert victim.poll() is None, "the victim finished before it could be killed"
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
    reference()
    (ref,) = [r for r in all_runs(store) if r.data.tags.get("labrun.pid") == str(os.getpid())]
    return victim_id, ref.info.run_id


def one_line_exit_2(proc, *needles: str) -> str:
    """A user error as labrun promises it: exit 2, one stderr line holding every needle, no traceback."""
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
