"""Sweep specs, cell expansion and the skip/retry ledger (in-process, real SQLite store)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tracking.config import ConfigError
from tracking.tasks import load_task


def _spec(tmp_path, text, name="s.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def _load(path, sets=()):
    from sweeps.spec import SweepSpec, load_spec

    return load_spec(SweepSpec, path, sets)[0]


def test_expansion_matrix_zip_seeds_conditions(tmp_path):
    from sweeps.matrix import expand

    path = _spec(tmp_path, """
        entry: toy
        config: quick
        overrides: {train.steps: 5}
        matrix: {train.optimizer: [adam, sgd]}
        zip: [{model.hidden: [8, 16], model.activation: [relu, tanh]}]
        seeds: [0, 1, 2]
        conditions:
          clean: {}
          noisy: {data.noise: 0.5}
    """)
    schema = load_task("toy").schema
    cells = expand(_load(path), schema)
    assert len(cells) == 2 * 2 * 3 * 2
    # zip keys vary together, never crossed
    pairs = {(c.config.model.hidden, c.config.model.activation) for c in cells}
    assert pairs == {(8, "relu"), (16, "tanh")}
    # conditions set both the tag value and their bundle
    noisy = [c for c in cells if c.condition == "noisy"]
    assert len(noisy) == 12 and all(c.config.data.noise == 0.5 for c in noisy)
    assert all(c.config.data.noise == 0.1 for c in cells if c.condition == "clean")
    assert all(c.config.train.steps == 5 for c in cells)
    # seeds vary slowest: the first 8 cells are all of seed 0
    assert [c.seed for c in cells[:8]] == [0] * 8 and cells[8].seed == 1
    # fingerprints: unique, stable across expansions, independent of key order in the spec
    fps = [c.fingerprint for c in cells]
    assert len(set(fps)) == len(fps)
    assert fps == [c.fingerprint for c in expand(_load(path), schema)]
    reordered = _spec(tmp_path, """
        entry: toy
        config: quick
        overrides: {train.steps: 5}
        matrix: {train.optimizer: [sgd, adam]}
        zip: [{model.activation: [tanh, relu], model.hidden: [16, 8]}]
        seeds: [2, 1, 0]
        conditions:
          noisy: {data.noise: 0.5}
          clean: {}
    """, "r.yaml")
    assert set(fps) == {c.fingerprint for c in expand(_load(reordered), schema)}
    # the seeds of one cell share a group key, and the group differs across methods
    groups = {}
    for c in cells:
        groups.setdefault(c.group, set()).add(c.seed)
    assert len(groups) == 8 and all(s == {0, 1, 2} for s in groups.values())


def test_identical_cells_collapse_and_spec_sets_apply(tmp_path):
    from sweeps.matrix import expand

    path = _spec(tmp_path, """
        entry: toy
        config: quick
        matrix: {train.lr: [0.01, 0.01, 0.1]}
    """)
    cells = expand(_load(path, ["seeds=[3]", "overrides.train.steps=7"]), load_task("toy").schema)
    assert [c.config.train.lr for c in cells] == [0.01, 0.1]
    assert all(c.seed == 3 and c.config.train.steps == 7 for c in cells)


@pytest.mark.parametrize("body, expected", [
    ("entry: toy\nmatrx: {seed: [1]}\n", "unknown key 'matrx'; did you mean: matrix"),
    ("entry: toy\nmatrix: {}\n", "matrix is empty"),
    ("entry: toy\nmatrix: {train.lr: []}\n", "matrix key 'train.lr' has no values"),
    ("entry: toy\nlauncher: slurmm\n", "unknown launcher 'slurmm'; valid: local, mlflow, submitit, ray"),
    ("entry: toy\nzip: [{model.hidden: [1, 2], model.activation: [relu]}]\n", "differ in length"),
    ("matrix: {seed: [1]}\n", "'entry' is required"),
])
def test_bad_sweep_specs_are_one_line_errors(tmp_path, body, expected):
    path = _spec(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        _load(path)
    assert expected in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("body, expected", [
    ("objective: {metric: mse}", "invalid metric name 'mse'"),
    ("objective: {metric: metric.mse.val, direction: down}", "objective.direction"),
    ("objective: {metric: metric.mse.val}\nsampler: {type: bayes}", "sampler.type"),
])
def test_bad_study_specs_are_one_line_errors(tmp_path, body, expected):
    from sweeps.spec import StudySpec, load_spec

    path = _spec(tmp_path, "entry: toy\nspace: {train.lr: {type: float, low: 0.001, high: 0.1}}\n" + body)
    with pytest.raises(ConfigError) as err:
        load_spec(StudySpec, path)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_cli_bad_specs_exit_2_and_write_nothing(store, tmp_path, capsys):
    from labrun.cli import main

    unknown_key = _spec(tmp_path, "entry: toy\nmatrix: {train.lrr: [0.1]}\n", "k.yaml")
    assert main(["sweep", str(unknown_key)]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown config key 'train.lrr'" in err and "train.lr" in err and len(err.splitlines()) == 1
    bad_task = _spec(tmp_path, "entry: nosuchtask\n", "t.yaml")
    assert main(["sweep", str(bad_task)]) == 2
    assert "unknown task 'nosuchtask'" in capsys.readouterr().err
    assert main(["sweep", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err
    bad_space = _spec(tmp_path, "entry: toy\nspace: {train.lrate: {type: float, low: 0.1, high: 1}}\n"
                                "objective: {metric: metric.mse.val}\nstorage: sqlite:///o.db\n", "o.yaml")
    assert main(["optimize", str(bad_space)]) == 2
    assert "unknown config key 'train.lrate'" in capsys.readouterr().err
    assert [e.name for e in store.search_experiments()] == ["Default"]
    assert store.search_runs(["0"]) == []
    assert not (tmp_path / "o.db").exists()


def test_labrun_help_stays_light():
    code = ("import sys; import labrun.cli as c; c.build_parser(); "
            "print(sorted(m for m in ('mlflow', 'optuna', 'torch', 'pandas') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- the ledger

def _fake_run(client, exp_id, fp, status, **tags):
    run = client.create_run(exp_id, tags={"labrun.task": "toy", "labrun.fingerprint": fp, **tags})
    if status != "RUNNING":
        client.set_terminated(run.info.run_id, status)
    return run.info.run_id


def test_ledger_decides_skip_retry_stale_and_elsewhere(store):
    import socket

    from sweeps.ledger import Ledger

    exp = store.create_experiment("toy")
    host = socket.gethostname()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    done = _fake_run(store, exp, "fp_done", "FINISHED")
    _fake_run(store, exp, "fp_done", "FAILED")
    _fake_run(store, exp, "fp_failed2", "FAILED")
    _fake_run(store, exp, "fp_failed2", "FAILED")
    killed = _fake_run(store, exp, "fp_killed", "KILLED")
    stale = _fake_run(store, exp, "fp_stale", "RUNNING", **{"labrun.host": host, "labrun.pid": str(dead.pid)})
    live = _fake_run(store, exp, "fp_live", "RUNNING", **{"labrun.host": host, "labrun.pid": str(os.getpid())})
    _fake_run(store, exp, "fp_other_task", "FINISHED", **{"labrun.task": "ired"})

    ledger = Ledger(store, exp, "toy").load(
        ["fp_done", "fp_failed2", "fp_killed", "fp_stale", "fp_live", "fp_other_task", "fp_new"],
        mark_stale=True)
    d = {fp: ledger.state(fp).decision(retries=1) for fp in
         ["fp_done", "fp_failed2", "fp_killed", "fp_stale", "fp_live", "fp_other_task", "fp_new"]}
    assert d == {"fp_done": "done", "fp_failed2": "exhausted", "fp_killed": "todo", "fp_stale": "todo",
                 "fp_live": "elsewhere", "fp_other_task": "todo", "fp_new": "todo"}
    assert ledger.state("fp_done").finished.run_id == done
    assert ledger.state("fp_failed2").decision(retries=2) == "todo"
    assert ledger.state("fp_live").live.run_id == live
    # the stale run is closed as KILLED in the store, with the reason
    run = store.get_run(stale)
    assert run.info.status == "KILLED" and run.data.tags["labrun.failure"].startswith("stale")
    assert store.get_run(live).info.status == "RUNNING"
    # no checkpoints yet, so nothing to resume from; once the killed run holds one, it is the source
    assert ledger.resume_source("fp_killed") is None
    cp = store.root / "cp_3.ptz"
    cp.write_bytes(b"state")
    store.log_artifact(killed, str(cp), "checkpoints")
    assert ledger.resume_source("fp_killed") == killed
    # the SQL fast path and the public search_runs path read the same attempts
    from mlflow.entities import ViewType

    from sweeps.ledger import _sql_rows

    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("LABRUN_PUBLIC_API_ONLY", raising=False)
        fast = _sql_rows(store, exp)
    assert fast is not None
    slow = ledger._search_rows(ViewType)
    as_set = lambda rows: {(r, st, t.get("labrun.fingerprint"), t.get("labrun.pid")) for r, st, _, t in rows  # noqa: E731
                           if t.get("labrun.task") == "toy"}
    assert as_set(fast) == as_set(slow) and len(as_set(fast)) == 7
    # with the fast path switched off (tracking.backends) the ledger reads through search_runs
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LABRUN_PUBLIC_API_ONLY", "1")
        assert _sql_rows(store, exp) is None


def test_dry_run_shows_plan_and_writes_nothing(store, tmp_path, capsys):
    from labrun.cli import main

    path = _spec(tmp_path, """
        entry: toy
        config: quick
        matrix: {train.optimizer: [adam, sgd]}
        seeds: [0, 1]
    """)
    spec = _load(path)
    from sweeps.matrix import expand

    cells = expand(spec, load_task("toy").schema)
    exp = store.create_experiment("toy")
    _fake_run(store, exp, cells[0].fingerprint, "FINISHED")
    _fake_run(store, exp, cells[1].fingerprint, "KILLED")
    before = len(store.search_runs([exp]))
    assert main(["sweep", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 cells" in out and "1 done" in out and "3 todo" in out
    lines = [ln for ln in out.splitlines() if ln.startswith("| ")][1:]
    assert len(lines) == 4
    assert "skip (FINISHED" in lines[0] and "rerun (earlier: 1 KILLED)" in lines[1]
    assert lines[2].rstrip(" |").endswith("run")
    assert len(store.search_runs([exp])) == before


@pytest.mark.parametrize("name", ["toy_quick", "toy_optuna", "ired_quick", "ired_multiseed",
                                  "ired_mining_optuna"])
def test_shipped_specs_validate(name):
    from sweeps.matrix import expand
    from sweeps.spec import StudySpec, SweepSpec, load_spec

    kind = StudySpec if "optuna" in name else SweepSpec
    spec, raw = load_spec(kind, name)
    assert raw["name"] == spec.name
    if name == "ired_multiseed":
        assert spec.matrix == {"mining.strategy": ["none", "random", "adversarial"]}
        assert spec.seeds == list(range(10))
    if name == "ired_mining_optuna":
        assert set(spec.space) == {"mining.opt_steps", "mining.ascent_lr", "mining.noise_scale",
                                   "mining.adversarial_fraction"}
        assert spec.objectives[0].metric == "metric.mse.val"
    try:
        task = load_task(spec.entry)
    except (ConfigError, ImportError) as exc:
        pytest.skip(f"task {spec.entry!r} cannot be loaded yet: {exc}")
    if kind is SweepSpec:
        cells = expand(spec, task.schema)
        assert len({c.fingerprint for c in cells}) == len(cells) > 0
    else:
        from sweeps.study import _check_space

        _check_space(spec, task.schema)
