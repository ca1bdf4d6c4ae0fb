"""Off the happy path, run options (#25 cases 5, 7, 8), in real processes against a real store.

A value outside a key's range, a parameter the user did not give, a section that rejects its
values: each ends as one line and exit 2 before any run exists, or as the run the user asked
for. The hypothesis fuzz at the end drives range-checked keys through ``labrun run toy``:
exit 0 or exit 2 with one line, never a traceback, never a run left RUNNING.
"""
from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.helpers import PYTHON, REPO, all_runs, one_line_exit_2 as _one_line_exit_2, run_cli

LABRUN = [PYTHON, "-m", "labrun"]
TASKS = ("toy", "ired", "ssvae", "mutual", "dynamics", "anomaly")




# --------------------------------------------------------------------------- case 5: ranges

OUT_OF_RANGE = [
    ("train.eval_every=0", "greater than 0"),
    ("train.lr=-0.1", "greater than 0"),
    ("train.lr=nan", "finite"),
    ("train.lr=.inf", "finite"),
    (f"seed={2**70}", "less than or equal to 4294967295"),
    ("seed=-1", "greater than or equal to 0"),
    ("train.steps=0", "greater than 0"),
    ("train.steps=-1", "greater than 0"),
]


@pytest.mark.parametrize("override,needle", OUT_OF_RANGE, ids=[o for o, _ in OUT_OF_RANGE])
def test_a_value_out_of_range_is_one_line_and_no_run(store, override, needle):
    """Before: ZeroDivisionError, torch's ValueError, an overflow, or a FINISHED run that never
    trained. After: the key, the value and the range, exit 2, an empty store."""
    proc = run_cli([*LABRUN, "run", "toy", "--config", "quick", "--set", override], cwd=store.root,
                   timeout=180)
    _one_line_exit_2(proc, "labrun run toy: error: ", override.split("=")[0], needle)
    assert all_runs(store) == []


def test_the_task_module_names_itself_in_the_error(store):
    proc = run_cli([PYTHON, "-m", "projects.ired.train", "--config", "quick", "--set", "train.lr=nan"],
                   cwd=store.root, timeout=180)
    _one_line_exit_2(proc, "python -m projects.ired.train: error: ", "train.lr", "finite")
    assert all_runs(store) == []


def _range_keys(task: str) -> dict[str, list[str]]:
    """The case-5 keys this task has, with values each must refuse."""
    from tracking.config import valid_keys
    from tracking.tasks import load_task

    keys = set(valid_keys(load_task(task).schema))
    bad = {"seed": [str(2**70), "-1", str(2**32)], "train.lr": ["-0.1", "0", "nan", ".inf", "-.inf"],
           "train.eval_every": ["0", "-1"], "train.steps": ["0", "-1"], "train.epochs": ["0", "-1"],
           "train.max_epochs": ["0", "-1"], "train.batch_size": ["0", "-3"],
           "train.learning_rate": ["-0.1", "nan", ".inf"]}
    return {k: v for k, v in bad.items() if k in keys}


@pytest.mark.parametrize("task", TASKS)
def test_every_task_declares_the_ranges(task, capsys):
    """Each task's schema refuses the case-5 values of the keys it has, in one line, and takes
    the platform's execution section (threads) and seed range like every other task."""
    from tracking.config import load_config
    from tracking.tasks import load_task

    schema = load_task(task).schema
    checked = _range_keys(task)
    assert "seed" in checked and ("train.lr" in checked or "train.learning_rate" in checked)
    for key, values in checked.items():
        for value in values:
            capsys.readouterr()
            with pytest.raises(SystemExit) as exc:
                load_config(schema, ["--config", "quick", "--set", f"{key}={value}"])
            err = capsys.readouterr().err
            assert exc.value.code == 2 and len(err.strip().splitlines()) == 1 and key in err, (key, value, err)
    cfg = load_config(schema, ["--config", "quick", "--set", "execution.num_threads=1"])
    assert cfg.execution.num_threads == 1


def test_the_old_thread_key_still_works(capsys):
    """``train.num_threads`` moved to ``execution.num_threads``: the old spelling still means it
    (YAML files, --set, a resumed run's config), and it stays out of the fingerprint."""
    from tracking.config import fingerprint, load_config, resolve_config
    from tracking.tasks import load_task

    schema = load_task("ired").schema
    old = load_config(schema, ["--config", "quick", "--set", "train.num_threads=3"])
    assert old.execution.num_threads == 3 and "num_threads" not in old.train.model_dump()
    resumed = resolve_config(schema, base={**old.model_dump(mode="json"), "execution": {},
                                           "train": {**old.train.model_dump(mode="json"), "num_threads": 2}})
    assert resumed.execution.num_threads == 2
    assert fingerprint(old) == fingerprint(resumed) == fingerprint(load_config(schema, ["--config", "quick"]))


NUMBERS = st.one_of(st.integers(-(2**80), 2**80).map(str), st.floats(allow_subnormal=False).map(repr),
                    st.sampled_from([".nan", ".inf", "-.inf", "nan", "inf", "1e400", "-0", "0", "1", "0.5"]))
POSITIVE = ("train.eval_every", "train.steps", "train.epochs", "train.max_epochs", "train.batch_size",
            "train.lr", "train.learning_rate")


@pytest.mark.parametrize("task", TASKS)
def test_fuzzed_range_keys_of_every_task_validate_or_fail_in_one_line(task, capsys):
    """Any number in a case-5 key of any task: one line and exit 2, or a config whose value is in
    range (positive, finite, a seed NumPy and torch accept). In-process: a run per example would
    take minutes for the bigger tasks; the subprocess fuzz below covers the toy task end to end."""
    from tracking.config import get_dotted, load_config
    from tracking.tasks import load_task

    schema, keys = load_task(task).schema, sorted(_range_keys(task))
    seen = {"ok": 0, "error": 0}

    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(key=st.sampled_from(keys), value=NUMBERS)
    def fuzz(key, value):
        capsys.readouterr()
        try:
            cfg = load_config(schema, ["--config", "quick", "--set", f"{key}={value}"])
        except SystemExit as exc:
            err = capsys.readouterr().err
            assert exc.code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, (key, value, err)
            seen["error"] += 1
            return
        got = get_dotted(cfg.model_dump(), key)
        if got is not None:
            assert math.isfinite(got), (key, value, got)
            assert got > 0 if key in POSITIVE else 0 <= got <= 2**32 - 1, (key, value, got)
        seen["ok"] += 1

    fuzz()
    with capsys.disabled():
        print(f"\nfuzz {task} range-checked keys: {seen}")
    assert seen["error"] > 0


# --------------------------------------------------------------------------- case 7: MLproject defaults

def test_no_task_entry_point_declares_a_default_that_overrides_the_config():
    """Only ``config`` is declared: any other parameter reaches the task as an override, and
    only when the user gives it."""
    from tracking.tasks import read_mlproject

    project = read_mlproject(REPO)
    tasks = {n: ep for n, ep in project.entry_points.items() if (ep.module or "").startswith("projects.")}
    assert {"toy", "ired", "ssvae", "mutual", "dynamics", "anomaly"} <= set(tasks)
    for name, ep in tasks.items():
        assert set(ep.declared()) == {"config"}, (name, ep.declared())
        assert "--set" not in ep.command, (name, ep.command)


def test_mlflow_run_mutual_keeps_the_files_problem(store, tmp_path):
    """Before: the entry point's default ``task=classification`` overrode ``problem: operator``
    and the run failed (an FNO is no classifier). After: the file's problem, and ``-P method``
    as a shorthand that keeps the file's other method keys."""
    proc = run_cli(["mlflow", "run", str(REPO), "-e", "mutual", "--env-manager", "local",
                    "--experiment-name", "mutual",
                    "-P", "config=projects/mutual/configs/operator_quick.yaml", "-P", "method=ssmo-soft",
                    "-P", "train.epochs=1", "-P", "pde.n_train=32", "-P", "pde.n_val=16", "-P", "pde.n_test=16"],
                   cwd=store.root, timeout=600,
                   env_extra={"MLFLOW_TRACKING_URI": store.uri, "LABRUN_PDE_CACHE": str(tmp_path / "pde")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = all_runs(store, ["mutual"])
    assert run.info.status == "FINISHED", run.data.tags.get("labrun.failure")
    assert run.data.params["problem"] == "operator" and run.data.params["model_a.name"] == "fno"
    assert run.data.params["method.name"] == "ssmo-soft" and run.data.params["method.lam"] == "1.0"


# --------------------------------------------------------------------------- case 8: section errors

@pytest.mark.parametrize("module,argv,needle", [
    ("projects.mutual.train", ["--config", "operator_quick", "--set", "model_a.name=mlp"],
     "model_a.name=mlp does not take model_a.modes"),
    ("projects.dynamics.train", ["--config", "quick", "--set", "model.heads=5"],
     "model.d_model (64) must be divisible by model.heads (5)"),
], ids=["mutual", "dynamics"])
def test_a_section_error_is_its_message_alone(store, module, argv, needle):
    """Before: ``model_a expects ModelConfig, got {'name': 'fno', ...} (Value error, ...)``."""
    proc = run_cli([PYTHON, "-m", module, *argv], cwd=store.root, timeout=180)
    line = _one_line_exit_2(proc, needle)
    assert "{" not in line and "expects" not in line and "Value error" not in line, line
    assert all_runs(store) == []


# --------------------------------------------------------------------------- fuzz: range-checked keys

def _texts(ints: st.SearchStrategy[int], huge: bool = True) -> st.SearchStrategy[str]:
    edges = ["0", "-1", ".nan", ".inf", "-.inf", "nan", "1e400", "1.5", "x", "", "null", "-0", str(-(2**70))]
    return st.one_of(ints.map(str), st.sampled_from(edges + ([str(2**32), str(2**70)] if huge else [])))


# Values drawn where a valid one stays a seconds-long run: 2**70 steps (or a batch of 2**70
# samples) is a valid config, and a run that would never end; it is left out for those keys.
RANGED = {
    "train.steps": _texts(st.integers(-3, 12), huge=False),
    "train.eval_every": _texts(st.integers(-3, 6)),
    "train.batch_size": _texts(st.integers(-3, 16), huge=False),
    "train.lr": st.one_of(st.floats(-1.0, 0.5, allow_nan=False, allow_subnormal=False).map(repr),
                          st.sampled_from([".nan", "-.inf", ".inf", "0", "-0.1", "1e-3", "nan", "1e400"])),
    "seed": _texts(st.integers(-2, 10)) | st.sampled_from(
        [str(2**32 - 1), str(2**32), str(-(2**63))]),
    "data.noise": st.one_of(st.floats(-1.0, 1.0, allow_nan=False, allow_subnormal=False).map(repr), st.sampled_from([".nan", ".inf"])),
    "train.fail_at_step": _texts(st.integers(-2, 15)),
}


def _argvs() -> st.SearchStrategy[list[str]]:
    pair = st.sampled_from(sorted(RANGED)).flatmap(lambda k: RANGED[k].map(lambda v: ["--set", f"{k}={v}"]))
    return st.lists(pair, min_size=1, max_size=3).map(lambda ps: [a for p in ps for a in p])


def _fuzz_real_runs(store, examples: int) -> dict[str, int]:
    seen = {"finished": 0, "failed-as-asked": 0, "refused": 0}

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(argv=_argvs())
    @example(argv=["--set", "train.eval_every=0"])  # the ZeroDivisionError of case 5, always tried
    def fuzz(argv):
        base = ["run", "toy", "--config", "quick", "--set", "train.steps=4", "--set", "checkpoint.every=0",
                "--set", "train.eval_every=2", "--log-model", "off"]
        proc = run_cli([*LABRUN, *base, *argv], cwd=store.root, timeout=240)
        running = [r.info.run_id for r in all_runs(store) if r.info.status == "RUNNING"]
        assert not running, (argv, running)
        if proc.returncode == 2:
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            assert len(lines) == 1 and lines[0].startswith("labrun run toy: error: "), (argv, proc.stderr)
            seen["refused"] += 1
            return
        if proc.returncode == 1 and "injected failure at step" in proc.stderr:
            # train.fail_at_step asked the task to raise: FAILED with its traceback, by design
            seen["failed-as-asked"] += 1
            return
        assert "Traceback" not in proc.stderr, (argv, proc.stderr[-3000:])
        assert proc.returncode == 0, (argv, proc.returncode, proc.stderr[-3000:])
        seen["finished"] += 1

    fuzz()
    return seen


def test_fuzzed_range_keys_end_in_a_run_or_one_line(store, capsys):
    seen = _fuzz_real_runs(store, 10)
    with capsys.disabled():
        print(f"\nfuzz labrun run toy, range-checked keys (subprocess): {seen}")
    assert seen["refused"] > 0


@pytest.mark.slow
def test_fuzzed_range_keys_longer(store, capsys):
    seen = _fuzz_real_runs(store, 40)  # ~6 s each: inside pytest-timeout's 600 s
    with capsys.disabled():
        print(f"\nfuzz labrun run toy, range-checked keys (subprocess, long): {seen}")
    assert not math.isnan(sum(seen.values()))
