"""``labrun reproduce RUN_ID``: the recorded run again, from its own code, then the verdict.

The run's commit is checked out in a temporary git worktree and its recorded ``git.diff``
(untracked files included) applied, so a result made from a dirty tree reproduces too. The
same entry point runs with the run's resolved config (seed included) into a new run tagged
``labrun.reproduces``, created here and adopted by the task (``MLFLOW_RUN_ID``), which any
labrun version at any commit understands. ``--at HEAD`` runs today's code with the old config
instead: "did my change alter the result?".
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.diff import RunDiff, RunSide, compare, read_side
from tracking import runs, store
from tracking import tags as T
from tracking.config import ConfigError

REPRODUCES = "labrun.reproduces"
RTOL, ATOL = 1e-5, 1e-8  # the tolerance off the CPU (or when asked): |b - a| <= atol + rtol * |a|
# What a run measures about its own execution, not its result: never part of the verdict.
VOLATILE_METRIC_WORDS = ("time", "throughput", "per_s", "/s", "memory", "mem_", "system/")


@dataclass
class Verdict:
    source: str
    run_id: str
    code: str
    reproduced: bool
    lines: list[str] = field(default_factory=list)

    def text(self) -> str:
        head = (f"labrun reproduce {self.source}: {'REPRODUCED' if self.reproduced else 'NOT REPRODUCED'} "
                f"by run {self.run_id} ({self.code})")
        return "\n".join([head, *(f"  {ln}" for ln in self.lines)])


def reproduce(run_id: str, *, at: str | None = None, rtol: float | None = None,
              atol: float | None = None, repo: str | Path | None = None) -> Verdict:
    client = store.client()
    side = read_side(client, run_id)
    root = _repo_root(repo)
    own = side.commit
    commit = _resolve(root, at or own, run_id)
    with _worktree(root, commit) as tree:
        patched = at is None or commit == _resolve(root, own, run_id)
        if patched and side.git_diff.strip():
            _apply(tree, side.git_diff, run_id)
        new_id = _launch(client, side, tree)
    new = read_side(client, new_id)
    code = f"commit {commit[:12]}" + (" + the run's git.diff" if patched and side.git_diff.strip() else "")
    return _verdict(compare(side, new, repo=root), rtol, atol, code)


def _repo_root(repo: str | Path | None) -> Path:
    out = subprocess.run(["git", "-C", str(repo or "."), "rev-parse", "--show-toplevel"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise ConfigError(f"{Path(repo or '.').resolve()} is not in a git repository; run labrun reproduce "
                          f"from a clone of the project (or pass --repo PATH)")
    return Path(out.stdout.strip())


def _resolve(root: Path, rev: str, run_id: str) -> str:
    if rev in ("", "unknown"):
        raise ConfigError(f"run {run_id} recorded no git commit (it ran outside a git checkout): there is "
                          f"no code to reproduce it from")
    out = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise ConfigError(f"commit {rev} is not in the repository at {root}; `git fetch` it or run from a "
                          f"clone that has it")
    return out.stdout.strip()


class _worktree:
    """A detached worktree at ``commit`` in a temp folder, removed however the block ends."""

    def __init__(self, root: Path, commit: str) -> None:
        self.root, self.commit = root, commit
        self.path = Path(tempfile.mkdtemp(prefix="labrun-reproduce-")) / "code"
        from tracking.leftovers import claim

        claim(self.path.parent, kind="reproduce")

    def __enter__(self) -> Path:
        out = subprocess.run(["git", "-C", str(self.root), "worktree", "add", "--detach", "--quiet",
                              str(self.path), self.commit], capture_output=True, text=True)
        if out.returncode != 0:
            shutil.rmtree(self.path.parent, ignore_errors=True)
            raise ConfigError(f"cannot check out {self.commit[:12]}: {out.stderr.strip()}")
        return self.path

    def __exit__(self, *exc: Any) -> None:
        subprocess.run(["git", "-C", str(self.root), "worktree", "remove", "--force", str(self.path)],
                       capture_output=True)
        shutil.rmtree(self.path.parent, ignore_errors=True)
        subprocess.run(["git", "-C", str(self.root), "worktree", "prune"], capture_output=True)


def _apply(tree: Path, patch: str, run_id: str) -> None:
    path = tree.parent / "git.diff"
    path.write_text(patch)
    out = subprocess.run(["git", "-C", str(tree), "apply", "--whitespace=nowarn", str(path)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise ConfigError(f"the git.diff of run {run_id} does not apply to its commit: "
                          f"{out.stderr.strip().splitlines()[0] if out.stderr.strip() else 'git apply failed'}")


def _launch(client: Any, side: RunSide, tree: Path) -> str:
    """The new run, created here (so it is tagged whatever the code at that commit knows),
    then adopted by the entry point in a subprocess."""
    exp_id = client.get_run(side.run_id).info.experiment_id
    run_id = runs.create(client, exp_id, name=f"{side.name[:24]}-repro", source="labrun reproduce",
                         tags={REPRODUCES: side.run_id, "mlflow.note.content": f"reproduces {side.run_id}"})
    cmd = _command(side, tree, run_id)
    path = os.pathsep.join(p for p in (str(tree), os.environ.get("PYTHONPATH", "")) if p)
    child = dict(os.environ, MLFLOW_RUN_ID=run_id, PYTHONPATH=path,
                 MLFLOW_TRACKING_URI=_absolute(store.tracking_uri()), LABRUN_PROGRESS="0")
    child.pop("LABRUN_PARENT_RUN_ID", None)
    print(f"labrun reproduce: running {' '.join(cmd[1:4])} at {tree} into run {run_id}",
          file=sys.stderr, flush=True)
    code = subprocess.run(cmd, cwd=tree, env=child).returncode
    # the entry point died before it could end its run
    runs.end(client, run_id, "FAILED", reason=f"the entry point exited {code} without ending its run",
             if_running=True)
    if code != 0:
        print(f"labrun reproduce: the entry point exited {code}", file=sys.stderr)
    return run_id


def _command(side: RunSide, tree: Path, run_id: str) -> list[str]:
    if side.tags.get(T.FOREIGN) == "true" or T.TASK not in side.tags:
        return _foreign_command(side, tree, run_id)
    from tracking.tasks import entry_points

    task = side.tags[T.TASK]
    ep = entry_points(tree).get(task)
    if ep is None or ep.module is None:
        raise ConfigError(f"the code at that commit has no entry point {task!r} running python -m")
    import yaml

    cfg = tree.parent / "config.yaml"
    cfg.write_text(yaml.safe_dump(side.config, sort_keys=False))
    return [sys.executable, "-m", ep.module, "--config", str(cfg)]


def _foreign_command(side: RunSide, tree: Path, run_id: str) -> list[str]:
    """A project labrun did not write: ``mlflow run`` of its folder in the worktree, with the
    run's recorded parameters (bit-exactness is not promised: its own code decides)."""
    source = side.tags.get("mlflow.source.name", "")
    source = source[len("file://"):] if source.startswith("file://") else source
    entry = side.tags.get("mlflow.project.entryPoint", "main")
    root = _repo_root(None)
    try:
        rel = Path(source).resolve().relative_to(root)
    except (ValueError, OSError):
        raise ConfigError(f"run {side.run_id} came from {source!r}, not from this repository; reproduce it "
                          f"from a clone of that project") from None
    params = [a for k, v in sorted(side.config.items()) for a in ("-P", f"{k}={v}")]
    return [sys.executable, "-m", "mlflow", "run", str(tree / rel), "-e", entry, *params,
            "--env-manager", "local", "--run-id", run_id]


def _absolute(uri: str) -> str:
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    return uri


def _result_metrics(d: RunDiff) -> list:
    return [m for m in d.metrics if not any(w in m.metric.lower() for w in VOLATILE_METRIC_WORDS)]


def _verdict(d: RunDiff, rtol: float | None, atol: float | None, code: str) -> Verdict:
    v = Verdict(d.a.run_id, d.b.run_id, code, False)
    env = [f"{k}: {a} -> {b}" for k, a, b in d.environment if not k.startswith(("host", "platform"))]
    if env:
        v.lines.append("the environment differs: " + "; ".join(env))
    metrics = _result_metrics(d)
    if not metrics or all(m.final_b is None for m in metrics):
        v.lines.append("the new run logged none of the original's metrics (see its log)")
        return v
    cpu = all(str(s.environment.get("device", "")).startswith("cpu") for s in (d.a, d.b))
    if cpu and rtol is None and atol is None:
        parted = [m.parting for m in metrics if m.parting is not None]
        v.reproduced = not parted
        first = min(parted, key=lambda p: (p.step, p.metric)) if parted else None
        v.lines.append(f"bit-exact: all {len(metrics)} metric series equal, step for step" if first is None
                       else f"the series part first at {first.text()}")
        return v
    return _within(v, metrics, RTOL if rtol is None else rtol, ATOL if atol is None else atol)


def _within(v: Verdict, metrics: list, rtol: float, atol: float) -> Verdict:
    off = [m for m in metrics if m.final_a is None or m.final_b is None
           or abs(m.final_b - m.final_a) > atol + rtol * abs(m.final_a)]
    v.reproduced = not off
    v.lines.append(f"tolerance |b - a| <= {atol:g} + {rtol:g}|a| on final values: "
                   f"{len(metrics) - len(off)}/{len(metrics)} metrics within")
    v.lines += [f"{m.metric}: {m.final_a} -> {m.final_b}" for m in off[:10]]
    return v
