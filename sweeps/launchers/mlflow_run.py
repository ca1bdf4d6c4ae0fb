"""``mlflow``: each cell as ``mlflow run <root> -e <entry> --env-manager local -P ...``.

This is the launcher to use when the MLproject itself is the contract (another machine,
another environment manager). The cell's run is created here first, nested under the
sweep's parent and tagged, then handed to ``mlflow run --run-id`` so that MLflow's own
run tracking and labrun's agree on one run.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sweeps.launchers.base import Job, Launcher, LauncherOptions
from sweeps.launchers.local import die_with_parent
from tracking import env
from tracking import tags as T
from tracking.exits import EXIT_FAILED, EXIT_FINISHED, EXIT_PRUNED, EXIT_SIGTERM


def mlflow_params(job: Job) -> list[str]:
    """``-P`` arguments: the base config plus every override (undeclared ones reach the task
    as ``--a.b v``), and ``resume`` for a retried cell."""
    args: list[str] = []
    if job.config is not None:
        args += ["-P", f"config={job.config}"]
    for item in job.overrides:
        args += ["-P", item]
    if job.resume:
        args += ["-P", f"resume={job.resume}"]
    if job.nproc > 1:
        args += ["-P", f"nproc={job.nproc}"]
    return args


def _absolute_store() -> str:
    from tracking import store

    uri = store.tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + os.path.abspath(uri[len("sqlite:///"):])
    return uri


def _project_of(job: Job) -> str | None:
    """A foreign project's cell carries its project (``sweeps.matrix.ForeignCell``)."""
    return getattr(job.cell, "project", None)


class MlflowRunLauncher(Launcher):
    name = "mlflow"
    help = "each cell as `mlflow run . -e ENTRY --env-manager local` (the MLproject as the contract)"

    def __init__(self, parallel: int = 1, options: LauncherOptions | None = None, *, module: str = "",
                 root: str | Path | None = None) -> None:
        super().__init__(parallel, options, module=module)
        from tracking.tasks import project_root

        self.root = str(project_root(root))

    def claim_tags(self, job: Job) -> dict[str, str]:
        from mlflow.utils import mlflow_tags as M

        return {M.MLFLOW_SOURCE_TYPE: "PROJECT", M.MLFLOW_SOURCE_NAME: _project_of(job) or self.root,
                M.MLFLOW_PROJECT_ENTRY_POINT: job.entry}

    def _create_run(self, job: Job) -> str:
        from tracking import runs, store

        # Until the task starts, the launcher answers for the run (owned): if it dies first,
        # the run is judged stale by this pid instead of lingering for minutes.
        tags = {**job.all_tags(), **self.claim_tags(job), T.TASK: job.tags.get(T.TASK, job.entry)}
        if job.cell is not None:  # so the ledger sees the run even if the task never starts
            tags[T.FINGERPRINT] = job.cell.fingerprint
        return runs.create(store.client(), job.experiment_id, name=job.run_name, tags=tags,
                           parent=job.parent_run_id, owned=True)

    def _start(self, job: Job) -> subprocess.Popen:
        if job.run_id is None:  # a sweep's claim already made it (sweeps/claims.py)
            job.run_id = self._create_run(job)
        root = _project_of(job) or self.root
        cmd = [sys.executable, "-m", "mlflow", "run", root, "-e", job.entry,
               "--env-manager", "local", "--run-id", job.run_id, *mlflow_params(job)]
        if getattr(job.cell, "version", None):
            cmd += ["--version", job.cell.version]
        child = env.child_environment(job.child_env())
        env.LABRUN_PARENT_RUN_ID.unset(child)  # the run exists; --run-id hands it over
        # The cell runs in its project's folder: a relative store (sqlite:///mlflow.db, the
        # default) would be another, empty one there.
        env.MLFLOW_TRACKING_URI.set(_absolute_store(), child)
        # `--env-manager local` runs the MLproject's `python` from PATH: make it this one
        child["PATH"] = os.path.dirname(sys.executable) + os.pathsep + child.get("PATH", "")
        out = open(job.log_path, "ab") if job.log_path else subprocess.DEVNULL
        proc = subprocess.Popen(cmd, env=child, stdout=out, stderr=subprocess.STDOUT,
                                cwd=root if os.path.isdir(root) else self.root, start_new_session=True,
                                preexec_fn=die_with_parent)
        if out is not subprocess.DEVNULL:
            out.close()
        return proc

    def _exit_code(self, job: Job, proc: subprocess.Popen) -> int | None:
        code = proc.poll()
        return None if code is None else self._task_code(job, code)

    def _task_code(self, job: Job, code: int) -> int:
        """``mlflow run`` exits 1 for any failure; the run's status says what happened."""
        if code == EXIT_FINISHED:
            return EXIT_FINISHED
        from tracking import runs, store

        try:
            run = store.client().get_run(job.run_id)
        except Exception:
            return code
        tags = run.data.tags
        pruned = tags.get(T.PRUNED) == "true"
        if pruned or tags.get(T.FAILURE, "").startswith("Interrupted"):
            # `mlflow run` marks any non-zero exit FAILED after the task said KILLED.
            if run.info.status != "KILLED":
                runs.end(store.client(), job.run_id, "KILLED")
            return EXIT_PRUNED if pruned else EXIT_SIGTERM
        if run.info.status == "KILLED":
            return EXIT_SIGTERM
        if run.info.status == "FINISHED":  # killed while `mlflow run` wrapped up: it did finish
            return EXIT_FINISHED
        if getattr(self, "_stopping", False):  # a foreign task knows no KILLED: say it for it
            runs.end(store.client(), job.run_id, "KILLED")
            return EXIT_SIGTERM
        if run.info.status == "RUNNING":  # the task never started (bad -P, missing env)
            runs.end(store.client(), job.run_id, "FAILED")
        return EXIT_FAILED

    def stop(self, grace_s: float = 30.0) -> list[Job]:
        self._stopping = True  # what ends now was killed, whatever `mlflow run` reports
        dropped = self._drop_queue()
        for _, proc in self.active.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # mlflow and the task it started
            except ProcessLookupError:
                pass
        deadline = time.time() + grace_s
        for _, proc in self.active.values():
            try:
                proc.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        return dropped

    def close(self) -> None:
        for _, proc in self.active.values():
            if proc.poll() is None:
                proc.kill()
