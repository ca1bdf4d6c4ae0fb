"""Issue #25 cases 9-14 and #34 case 3: sweeps and studies off the happy path, in real processes
on real stores (SQLite MLflow store, SQLite Optuna storage), nothing mocked."""
from __future__ import annotations

import os
import signal
import subprocess
import textwrap
from collections import Counter
import time
from pathlib import Path

import pytest

from tests.helpers import PYTHON, REPO, all_runs, run_cli


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["PATH"] = str(Path(PYTHON).parent) + os.pathsep + env.get("PATH", "")
    env.update(MLFLOW_DISABLE_TELEMETRY="true", WANDB_MODE="disabled", LABRUN_PROGRESS="0", **extra)
    return env


def _write(tmp_path: Path, text: str, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


TOY = """
    entry: toy
    name: {name}
    config: quick
    overrides: {{train.steps: {steps}, train.eval_every: 2, checkpoint.every: 2, train.sleep_s: {sleep}}}
    matrix:
      train.optimizer: [adam, sgd]
    seeds: [0]
    parallel: 2
"""


# ------------------------------------------------------------------------------------ case 11

@pytest.mark.parametrize("command", ["sweep", "optimize"])
@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "-x"])
def test_a_path_like_name_is_one_line_at_load_and_nothing_is_written(store, tmp_path, command, name):
    body = (TOY.format(name="n", steps=2, sleep=0) if command == "sweep" else
            "entry: toy\nname: n\nconfig: quick\nspace: {train.lr: {type: float, low: 0.001, high: 0.1}}\n"
            "objective: {metric: metric.mse.val}\nstorage: sqlite:///optuna.db\n")
    spec = _write(tmp_path, body)
    args = [PYTHON, "-m", "labrun", command, str(spec), "--set", f"name={name}"]
    if command == "sweep":
        args.append("--dry-run")
    proc = run_cli(args, env_extra=_env(), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "name" in lines[0] and "plain word" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and not proc.stdout.strip()
    assert [e.name for e in store.search_experiments()] == ["Default"]
    assert not (tmp_path / "optuna.db").exists()


def test_a_failure_after_the_parent_exists_ends_it_failed(store, tmp_path):
    """The ray launcher is not installed here: building it fails after the parent run was
    made. The parent must end FAILED with the reason, never stay RUNNING."""
    spec = _write(tmp_path, TOY.format(name="noray", steps=2, sleep=0))
    proc = run_cli([PYTHON, "-m", "labrun", "sweep", str(spec), "--set", "launcher=ray"],
                   env_extra=_env(), cwd=tmp_path, timeout=240)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "needs ray" in proc.stderr and "Traceback" not in proc.stderr
    (parent,) = [r for r in all_runs(store) if r.data.tags.get("labrun.kind") == "sweep"]
    assert parent.info.status == "FAILED", parent.info.status
    assert "needs ray" in parent.data.tags["labrun.failure"]


# ------------------------------------------------------------------------------------ case 12

def _children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_during_the_cells_exits_143_and_ends_them_killed(store, tmp_path):
    spec = _write(tmp_path, TOY.format(name="term", steps=40, sleep=0.3))
    log = open(tmp_path / "sweep.log", "w")
    proc = subprocess.Popen([PYTHON, "-m", "labrun", "sweep", str(spec)], cwd=tmp_path, env=_env(),
                            stdout=log, stderr=subprocess.STDOUT)
    _wait(lambda: any(r.info.status == "RUNNING" and r.data.params.get("train.optimizer")
                      for r in all_runs(store)), 180, "a cell that has started training")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(120) == 143, (tmp_path / "sweep.log").read_text()
    runs = all_runs(store)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    (parent,) = [r for r in runs if r.data.tags.get("labrun.kind") == "sweep"]
    assert parent.info.status == "KILLED"


def test_sigterm_to_labrun_optimize_ends_the_trial_and_the_study_killed(store, tmp_path):
    """SIGTERM took Ctrl-C's path only for sweeps: a study died by the default handler and
    left its parent run and the running trial's run RUNNING."""
    spec = _write(tmp_path, "entry: toy\nname: opt\nconfig: quick\noverrides: {train.steps: 40, train.sleep_s: 0.3}\n"
                  "space: {train.lr: {type: float, low: 0.001, high: 0.1}}\nobjective: {metric: metric.mse.val}\n"
                  "n_trials: 5\nstorage: sqlite:///optuna.db\n")
    proc = subprocess.Popen([PYTHON, "-m", "labrun", "optimize", str(spec)], cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait(lambda: any(r.info.status == "RUNNING" and r.data.params.get("train.lr")
                      for r in all_runs(store)), 180, "a trial that has started training")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    assert "Traceback" not in out, out
    runs = all_runs(store)
    assert not [r for r in runs if r.info.status == "RUNNING"], [(r.info.run_name, r.info.status) for r in runs]
    assert "KILLED" in {r.info.status for r in runs if r.data.params.get("train.lr")}


def test_sigterm_while_planning_exits_143_and_leaves_no_process(store, tmp_path):
    """SIGTERM while the sweep starts its fork server (before any run exists): 143, not a
    death by the default handler (-15 here), and the fork server goes too."""
    spec = _write(tmp_path, TOY.format(name="early", steps=2, sleep=0))
    proc = subprocess.Popen([PYTHON, "-m", "labrun", "sweep", str(spec)], cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _wait(lambda: _children_of(proc.pid) or proc.poll() is not None, 120, "the fork server")
    helpers = _children_of(proc.pid)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    assert "Traceback" not in out, out
    _wait(lambda: not any(map(_alive, helpers)), 30, "the fork server to go")
    assert not [r for r in all_runs(store) if r.info.status == "RUNNING"]


# ------------------------------------------------------------------------------------ case 13

def test_a_sweep_whose_reader_goes_away_still_finishes_its_cells_quietly(store, tmp_path):
    """`labrun sweep spec | head -2`: the cells ran, then the final report met the closed pipe
    and the sweep ended with a BrokenPipeError traceback and exit 1."""
    spec = _write(tmp_path, TOY.format(name="headed", steps=2, sleep=0))
    proc = subprocess.run(["bash", "-c", f"{PYTHON} -m labrun sweep {spec} | head -2; "
                                         "echo \"exit=${PIPESTATUS[0]}\" >&2"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr[-3000:]
    assert "exit=0" in proc.stderr, proc.stderr[-3000:]
    runs = all_runs(store)
    assert runs and {r.info.status for r in runs} == {"FINISHED"}


@pytest.mark.slow  # two trials through a closed pipe: the sweep's twin above runs in make test
def test_a_study_whose_reader_goes_away_still_runs_its_trials_quietly(store, tmp_path):
    spec = _write(tmp_path, "entry: toy\nname: headed\nconfig: quick\noverrides: {train.steps: 4}\n"
                  "space: {train.lr: {type: float, low: 0.001, high: 0.1}}\nobjective: {metric: metric.mse.val}\n"
                  "n_trials: 2\nstorage: sqlite:///optuna.db\n")
    proc = subprocess.run(["bash", "-c", f"{PYTHON} -m labrun optimize {spec} | head -1; "
                                         "echo \"exit=${PIPESTATUS[0]}\" >&2"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr[-3000:]
    assert "exit=0" in proc.stderr, proc.stderr[-3000:]
    assert {r.info.status for r in all_runs(store)} == {"FINISHED"}


def test_a_dry_run_into_a_closed_pipe_ends_quietly(store, tmp_path):
    spec = _write(tmp_path, "entry: toy\nname: piped\nconfig: quick\nmatrix: {train.lr: "
                  + str([round(0.001 * (i + 1), 4) for i in range(200)]) + "}\nseeds: [0, 1, 2]\n")
    proc = subprocess.run(["bash", "-c", f"{PYTHON} -m labrun sweep {spec} --dry-run | head -3; "
                                         "echo \"exit=${PIPESTATUS[0]}\" >&2"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=240)
    assert len(proc.stdout.splitlines()) == 3, proc.stdout
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert "exit=0" in proc.stderr, proc.stderr


@pytest.mark.slow
def test_the_summary_reads_plainly_when_every_cell_was_already_finished(store, tmp_path):
    spec = _write(tmp_path, "entry: toy\nname: plain\nconfig: quick\noverrides: {train.steps: 2, "
                  "train.eval_every: 1}\nseeds: [0]\n")
    first = run_cli([PYTHON, "-m", "labrun", "sweep", str(spec)], env_extra=_env(), cwd=tmp_path, timeout=240)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "1/1 cells FINISHED (1 finished)" in first.stdout, first.stdout
    again = run_cli([PYTHON, "-m", "labrun", "sweep", str(spec)], env_extra=_env(), cwd=tmp_path, timeout=240)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1/1 cells FINISHED (1 skipped as already finished)" in again.stdout, again.stdout
    assert "(;" not in again.stdout and "0 skipped" not in first.stdout


def test_the_plan_shows_what_varies_and_csv_json_carry_everything(store, tmp_path):
    """mutual_all: 31 zip rows of ~30 keys x 4 methods x 2 seeds. The table's cell column
    names the few keys that tell the rows apart; csv and json have every value."""
    import csv
    import io
    import json

    base = [PYTHON, "-m", "labrun", "sweep", "mutual_all", "--dry-run"]
    table = run_cli(base, env_extra=_env(), cwd=tmp_path, timeout=240)
    assert table.returncode == 0, table.stderr
    rows = [line for line in table.stdout.splitlines() if line.startswith("| ") and "fingerprint" not in line]
    assert len(rows) == 248
    cell = rows[0].split(" | ")[1].strip()
    assert cell == "problem=classification data.dataset=digits condition=clean model_a.name=mlp " \
                   "model_b.name=cnn method.name=independent seed=0", cell   # B varies apart from A
    assert max(len(r) for r in rows) < 200, max(len(r) for r in rows)
    assert "pde.n_train" not in table.stdout and "series.synthetic.length" not in table.stdout

    as_csv = run_cli(base + ["--format", "csv"], env_extra=_env(), cwd=tmp_path, timeout=240)
    assert as_csv.returncode == 0, as_csv.stderr
    records = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(records) == 248 and as_csv.stderr.startswith("sweep 'mutual_all': 248 cells")
    values = json.loads(records[0]["values"])
    assert values["pde.n_train"] == 1000 and values["model_b.name"] == "cnn" and values["seed"] == 0
    assert records[0]["fingerprint"] == rows[0].split(" | ")[2].strip()

    as_json = run_cli(base + ["--format", "json"], env_extra=_env(), cwd=tmp_path, timeout=240)
    assert as_json.returncode == 0, as_json.stderr
    cells = json.loads(as_json.stdout)
    assert len(cells) == 248 and cells[-1]["values"]["model_b.name"] == "gnot"
    assert {c["values"]["seg.n_train"] for c in cells if c["values"]["problem"] == "segmentation"} == {256}
    assert [c["fingerprint"] for c in cells] == [r["fingerprint"] for r in records]

    wrong = run_cli([PYTHON, "-m", "labrun", "sweep", "mutual_all", "--format", "csv"], env_extra=_env(),
                    cwd=tmp_path)
    assert wrong.returncode == 2 and len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr


# ------------------------------------------------------------------------------------ case 14

def test_fingerprints_by_template_equal_full_validation(tmp_path):
    """The cheap plan (one validation per axis value, one hash per cell) must give every
    cell the fingerprint that validating the whole cell gives (what a task's run is tagged
    with), in the same order, duplicates collapsed the same way."""
    from sweeps.matrix import Expansion
    from sweeps.spec import SweepSpec, load_spec
    from tracking.config import fingerprint, resolve_config
    from tracking.tasks import load_task

    spec_path = _write(tmp_path, """
        entry: toy
        config: quick
        overrides: {train.steps: 7}
        conditions: {clean: {}, noisy: {data.noise: 0.5}}
        zip:
          - {model.hidden: [8, 16, 32], train.lr: [0.01, 0.02, 0.03]}
        matrix:
          train.optimizer: [adam, sgd]
          train.eval_every: [1, 7, 10]
          train.steps: [7, 8]
        seeds: [0, 1]
    """)
    spec, _ = load_spec(SweepSpec, spec_path)
    schema = load_task("toy").schema
    fast = Expansion(spec, schema)
    assert fast.template is not None
    full = Expansion(spec, schema)
    full.template = None
    got = [(n, fp) for n, _, fp in fast.index_rows()]
    assert got == [(n, fp) for n, _, fp in full.index_rows()]
    assert len(got) == 2 * 2 * 3 * 2 * 3 * 2  # the two train.steps=7 cells are the base: no collapse here
    for cell in list(fast.cells())[::17]:
        assert fingerprint(resolve_config(schema, "quick", cell.overrides)) == cell.fingerprint
    assert Expansion(spec.model_copy(update={"matrix": {"train.steps": [7, 7]}}), schema).template is not None


@pytest.mark.parametrize("entry", ["mutual", "dynamics"])
def test_schemas_with_cross_field_validators_are_validated_whole(entry):
    from sweeps.template import separable
    from tracking.tasks import load_task

    assert not separable(load_task(entry).schema)
    assert separable(load_task("toy").schema) and separable(load_task("ired").schema)


# ------------------------------------------------------------------------------------ case 10

@pytest.mark.slow
def test_two_seeded_workers_never_propose_the_same_point(store, tmp_path):
    """Two `labrun optimize` workers started together on one storage with sampler seed 0:
    16 trials (8 each, about), no two with the same parameters; the same seed gives trial k
    the same draw whichever worker runs it (the per-trial seed)."""
    import optuna

    spec = _write(tmp_path, f"""
        entry: toy
        name: lockstep
        config: quick
        overrides: {{train.steps: 2, train.eval_every: 1, checkpoint.every: 0}}
        space:
          train.lr: {{type: float, low: 0.001, high: 0.3, log: true}}
          model.hidden: {{type: int, low: 4, high: 64}}
        objective: {{metric: metric.mse.val, direction: minimize}}
        n_trials: 16
        sampler: {{type: tpe, seed: 0}}
        pruner: {{type: none}}
        storage: sqlite:///{tmp_path}/optuna.db
    """)
    procs = [subprocess.Popen([PYTHON, "-m", "labrun", "optimize", str(spec)], cwd=tmp_path, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    study = optuna.load_study(study_name="lockstep", storage=f"sqlite:///{tmp_path}/optuna.db")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) >= 16
    points = [tuple(sorted(t.params.items())) for t in done]
    assert len(set(points)) == len(points), sorted(Counter(points).items(), key=lambda kv: -kv[1])[:3]
    assert all("trial" in out for out in outs), outs  # both workers ran trials


def test_a_trials_sampler_seed_depends_on_the_study_seed_and_the_trial_only():
    from sweeps.study._space import trial_seed

    assert len({trial_seed(0, n) for n in range(1000)}) == 1000
    assert trial_seed(0, 3) == trial_seed(0, 3) != trial_seed(1, 3)


# ------------------------------------------------------------------------------------ case 9

@pytest.mark.slow
def test_a_cell_whose_checkpoints_are_all_corrupt_starts_fresh_and_finishes(store, tmp_path):
    """A run SIGKILLed after its checkpoints were written, then every checkpoint file
    corrupted on disk. The sweep's resume of it fails loading them; the cell is run again from
    scratch, tagged with why, and finishes, even with retries: 0 (the cell did not fail)."""
    sets = ["train.steps=12", "train.eval_every=2", "checkpoint.every=2", "train.sleep_s=0.3", "seed=0"]
    victim = subprocess.Popen([PYTHON, "-m", "labrun", "run", "toy", "--config", "quick",
                               *[a for s in sets for a in ("--set", s)]],
                              cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = lambda: list((tmp_path / "mlruns").glob("*/*/artifacts/checkpoints/*.ptz"))  # noqa: E731
    _wait(lambda: len(ckpts()) >= 2 or victim.poll() is not None, 180, "two checkpoints")
    victim.kill()
    victim.wait(30)
    assert ckpts(), "the victim wrote no checkpoint"
    (killed,) = [r for r in all_runs(store) if r.data.tags.get("labrun.task") == "toy"]
    for path in ckpts():
        path.write_bytes(b"not a checkpoint" * 8)
    spec = _write(tmp_path, """
        entry: toy
        name: corrupt
        config: quick
        overrides: {train.steps: 12, train.eval_every: 2, checkpoint.every: 2, train.sleep_s: 0.3}
        seeds: [0]
        retries: 0
    """)
    proc = run_cli([PYTHON, "-m", "labrun", "sweep", str(spec)], env_extra=_env(), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "starts fresh" in proc.stdout + proc.stderr
    runs = {r.info.run_id: r for r in all_runs(store) if r.data.tags.get("labrun.task") == "toy"}
    (done,) = [r for r in runs.values() if r.info.status == "FINISHED"]
    assert killed.info.run_id in done.data.tags["labrun.fresh_start"]
    assert "labrun.resumed_from" not in done.data.tags
    assert "CheckpointError" in runs[killed.info.run_id].data.tags["labrun.checkpoint.unusable"]
    again = run_cli([PYTHON, "-m", "labrun", "sweep", str(spec), "--dry-run"], env_extra=_env(), cwd=tmp_path)
    assert "1 done" in again.stdout, again.stdout


# ------------------------------------------------------------------------------ #34 case 3

ELASTICNET = REPO / "examples" / "elasticnet"


def _study_args(tmp_path: Path, *sets: str) -> list[str]:
    return [PYTHON, "-m", "labrun", "optimize", str(ELASTICNET / "study.yaml"), "--set", f"project={ELASTICNET}",
            "--set", f"storage=sqlite:///{tmp_path}/optuna.db", *[a for s in sets for a in ("--set", s)]]


@pytest.mark.parametrize("sets, says", [
    (["space.alpah.type=float", "space.alpah.low=1", "space.alpah.high=2"],
     "declares no parameter 'alpah'"),
    (["space.alpha.type=categorical", "space.alpha.choices=[0.1, lots]"], "expects float, got 'lots'"),
    (["pruner.type=median"], "cannot be pruned; set pruner: {type: none}"),
    (["seed_param=split_seed", "seeds=[0,1]"], "seeds need a parameter 'split_seed'"),
    (["config=quick"], "'config' is a labrun task's base YAML"),
    (["launcher=submitit"], "run through `mlflow run`"),
])
def test_a_foreign_study_spec_is_checked_against_the_mlproject_first(store, tmp_path, sets, says):
    proc = run_cli(_study_args(tmp_path, *sets), env_extra=_env(), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], proc.stderr
    assert not (tmp_path / "optuna.db").exists()
    assert [e.name for e in store.search_experiments()] == ["Default"]


@pytest.mark.slow
def test_two_workers_run_an_optuna_study_over_the_elasticnet_project(store, tmp_path):
    """examples/elasticnet/study.yaml, 4 trials shared by two workers started together: each
    trial's run went through `mlflow run` with the sampled -P parameters, and its value is the
    rmse the project logged."""
    import optuna

    args = _study_args(tmp_path, "n_trials=4", "seeds=[0]")
    procs = [subprocess.Popen(args, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert all("pruning off" in out for out in outs), outs
    study = optuna.load_study(study_name="elasticnet_search", storage=f"sqlite:///{tmp_path}/optuna.db")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 4, [(t.number, t.state) for t in study.trials]
    assert len({tuple(sorted(t.params.items())) for t in done}) == 4
    for trial in done:
        (run_id,) = trial.user_attrs["mlflow_run_ids"]
        run = store.get_run(run_id)
        assert run.info.status == "FINISHED"
        assert run.data.tags["labrun.task"] == "elasticnet.main" and run.data.tags["optuna.trial"] == str(trial.number)
        assert run.data.tags["mlflow.source.type"] == "PROJECT"
        assert float(run.data.params["alpha"]) == pytest.approx(trial.params["alpha"])
        assert float(run.data.params["l1_ratio"]) == pytest.approx(trial.params["l1_ratio"])
        assert trial.value == pytest.approx(run.data.metrics["rmse"])
    parents = [r for r in all_runs(store) if r.data.tags.get("labrun.kind") == "study"]
    assert [p.info.status for p in parents] == ["FINISHED"]
