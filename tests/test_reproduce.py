"""``labrun reproduce`` and ``labrun diff`` on real runs of a small task in a real git repository.

The task lives in its own repository, so its commits, its dirty tree and its untracked file
are the test's to make: a run from a dirty tree reproduces bit-exactly only if the recorded
git.diff (untracked file included) is applied; a later commit that changes one line changes
the series from step 2 on, and the verdict must say so.
"""
from __future__ import annotations

import subprocess
import textwrap

import pytest

from tests.helpers import PYTHON, REPO, all_runs, run_cli

TRAIN = textwrap.dedent('''
    from typing import ClassVar
    from tracking import TaskConfig, load_config, start_run

    FACTOR = 1.0


    class Config(TaskConfig):
        task: ClassVar[str] = "mini"
        steps: int = 3


    def main(argv=None):
        cfg = load_config(Config, argv)
        with start_run(cfg) as run:
            for s in range(cfg.steps):
                value = (cfg.seed + 1.0) / (s + 1) * (FACTOR if s >= 2 else 1.0)
                run.log_metrics({"loss.total": value, "metric.score.val": 1.0 - value / 10}, step=s)


    if __name__ == "__main__":
        main()
''')
MLPROJECT = textwrap.dedent('''
    name: mini
    entry_points:
      mini:
        parameters: {config: {type: string, default: ""}}
        command: "python -m minitask.train"
''')


def _git(cwd, *args):
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd, check=True,
                   capture_output=True)


def _repo(root):
    code = root / "code"
    (code / "minitask").mkdir(parents=True)
    (code / "minitask" / "__init__.py").write_text("")
    (code / "minitask" / "train.py").write_text(TRAIN)
    (code / "MLproject").write_text(MLPROJECT)
    (code / ".gitignore").write_text("mlruns/\n")
    _git(code, "init", "-q")
    _git(code, "add", ".")
    _git(code, "commit", "-qm", "c1")
    return code


def _train(store, code, *argv):
    before = {r.info.run_id for r in all_runs(store)}
    run_cli([PYTHON, "-m", "minitask.train", *argv], cwd=code, check=True,
            env_extra={"PYTHONPATH": f"{code}:{REPO}"})
    (new,) = [r for r in all_runs(store) if r.info.run_id not in before]
    return new.info.run_id


def _labrun(code, *argv):
    return run_cli([PYTHON, "-m", "labrun", *argv], cwd=code, timeout=300,
                   env_extra={"PYTHONPATH": str(REPO)})


def _dirty_run(store, code):
    """One changed line that imports an untracked file: only the recorded patch brings both back."""
    train = code / "minitask" / "train.py"
    train.write_text(TRAIN.replace("FACTOR = 1.0", "from minitask.extra import FACTOR"))
    (code / "minitask" / "extra.py").write_text("FACTOR = 2.0\n")
    run_b = _train(store, code)
    proc = _labrun(code, "reproduce", run_b)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "REPRODUCED" in proc.stdout and "bit-exact" in proc.stdout and "git.diff" in proc.stdout
    copy = [r for r in all_runs(store) if r.data.tags.get("labrun.reproduces") == run_b]
    assert len(copy) == 1 and copy[0].info.status == "FINISHED"
    assert copy[0].data.metrics["loss.total"] == 1.0 / 3 * 2.0
    assert "\r" not in proc.stderr  # no download bars around the verdict


def test_reproduce_a_run_made_from_a_dirty_tree(store, tmp_path):
    _dirty_run(store, _repo(tmp_path))


@pytest.mark.slow
def test_reproduce_after_a_code_change_and_diff_the_runs(store, tmp_path):
    code = _repo(tmp_path)
    c1 = subprocess.run(["git", "rev-parse", "HEAD"], cwd=code, capture_output=True, text=True).stdout.strip()
    run_a = _train(store, code)
    _dirty_run(store, code)

    # A later commit changes one line: the old code reproduces, today's code parts at step 2.
    train = code / "minitask" / "train.py"
    train.write_text(TRAIN.replace("FACTOR = 1.0", "FACTOR = 3.0"))
    (code / "minitask" / "extra.py").unlink()
    _git(code, "commit", "-qam", "c2")
    exact = _labrun(code, "reproduce", run_a, "--at", c1)
    assert exact.returncode == 0 and "bit-exact" in exact.stdout, exact.stdout + exact.stderr[-2000:]
    head = _labrun(code, "reproduce", run_a, "--at", "HEAD")
    assert head.returncode == 1, head.stdout + head.stderr[-2000:]
    assert "NOT REPRODUCED" in head.stdout and "at step 2" in head.stdout and "loss.total" in head.stdout

    # diff: one config key and one line of code, nothing else.
    run_c = _train(store, code, "--set", "steps=4")
    diff = _labrun(code, "diff", run_a, run_c)
    assert diff.returncode == 0, diff.stderr[-2000:]
    config = diff.stdout.split("Config:", 1)[1].split("Environment:", 1)[0]
    assert "steps" in config and "3" in config and "4" in config
    assert len([ln for ln in config.splitlines() if ln.strip() and not ln.startswith(("key", "-"))]) == 1
    assert "(same packages, device and threads)" in diff.stdout
    changed = [ln for ln in diff.stdout.split("Code:", 1)[1].splitlines()
               if ln.startswith(("+", "-")) and not ln.startswith(("+++", "---"))]
    assert changed == ["-FACTOR = 1.0", "+FACTOR = 3.0"]
    md = _labrun(code, "diff", run_a, run_c, "--format", "md")
    assert "### Config" in md.stdout and "```diff" in md.stdout and "| steps |" in md.stdout


@pytest.mark.slow
def test_reproduce_refuses_what_it_cannot_do_in_one_line(store, tmp_path):
    code = _repo(tmp_path)
    run_a = _train(store, code)
    for argv, needle in ((["reproduce", "0" * 32], "no run"),
                         (["reproduce", run_a, "--at", "deadbeef"], "is not in the repository"),
                         (["diff", run_a, "nope"], "no run 'nope'")):
        proc = _labrun(code, *argv)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == 2 and len(lines) == 1 and needle in lines[0], proc.stderr[-2000:]
    outside = _labrun(tmp_path, "reproduce", run_a)
    assert outside.returncode == 2 and "not in a git repository" in outside.stderr


SPEC = textwrap.dedent('''
    entry: mini
    name: mini_check
    experiment: mini
    description: the check's small study
    matrix: {steps: [3, 4]}
    seeds: [0, 1, 2]
    parallel: 2
    launcher: local
''')


@pytest.mark.slow
def test_check_passes_unchanged_code_and_flags_an_injected_regression(store, tmp_path):
    code = _repo(tmp_path)
    train = code / "minitask" / "train.py"
    train.write_text(TRAIN.replace("value = (cfg.seed + 1.0) / (s + 1) * (FACTOR if s >= 2 else 1.0)",
                                   "value = (1.0 / (s + 1) + 0.01 * cfg.seed) * (FACTOR if s >= 2 else 1.0)"))
    (code / "study.yaml").write_text(SPEC)
    _git(code, "add", ".")
    _git(code, "commit", "-qm", "study")
    base = _labrun(code, "sweep", "study.yaml")
    assert base.returncode == 0, base.stderr[-3000:]
    same = _labrun(code, "check", "study.yaml", "--against", "mini", "-m", "loss.total")
    assert same.returncode == 0, same.stdout + same.stderr[-3000:]
    assert same.stdout.count(" same") == 2 and "no regression in 2 groups" in same.stdout
    train.write_text(train.read_text().replace("FACTOR = 1.0", "FACTOR = 3.0"))  # worse from step 2 on
    worse = _labrun(code, "check", "study.yaml", "--against", "mini", "-m", "loss.total")
    assert worse.returncode == 1, worse.stdout + worse.stderr[-3000:]
    assert worse.stdout.count(" worse") == 2 and "REGRESSION in 2 of 2 groups" in worse.stdout
    checks = [r for r in all_runs(store) if r.data.tags.get("labrun.kind") == "check"]
    assert len(checks) == 2 and sorted(r.data.metrics["check.regressions"] for r in checks) == [0.0, 2.0]
    bad = _labrun(code, "check", "study.yaml", "--against", "nothing-here", "-m", "loss.total")
    assert bad.returncode == 2 and "no FINISHED task runs match --against 'nothing-here'" in bad.stderr


@pytest.mark.slow
def test_a_foreign_mlflow_project_reproduces_within_tolerance(store, tmp_path):
    import shutil

    code = tmp_path / "elastic"
    shutil.copytree(REPO / "examples" / "elasticnet", code)
    _git(code, "init", "-q")
    _git(code, "add", ".")
    _git(code, "commit", "-qm", "elasticnet")
    first = run_cli([PYTHON, "-m", "mlflow", "run", ".", "-P", "alpha=0.1", "--env-manager", "local",
                     "--experiment-name", "plain"], cwd=code, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    (run,) = all_runs(store, ["plain"])
    proc = _labrun(code, "reproduce", run.info.run_id)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "REPRODUCED" in proc.stdout and "tolerance" in proc.stdout
    (copy,) = [r for r in all_runs(store, ["plain"]) if r.data.tags.get("labrun.reproduces") == run.info.run_id]
    assert copy.data.params["alpha"] == "0.1" and copy.info.status == "FINISHED"
