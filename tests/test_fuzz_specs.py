"""Property-based fuzzing of sweep and study specs (the YAML documents and ``--set`` on them).

A spec error must cost nothing: every document, however mangled, either plans (``labrun
sweep --dry-run``) or validates, or is refused with exit 2 and one line on stderr, never a
traceback, and no run appears in the store. Documents start from a valid toy spec and get a
few keys replaced by values from YAML's odd corners; some are raw text; ``--set`` items are
fuzzed the same way. ``project`` is never fuzzed: a URI there would make a sweep clone it.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import all_runs
from tests.test_fuzz_config import YAML_EDGES

FAST = settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=1500, deadline=None, database=None, suppress_health_check=list(HealthCheck))

SWEEP = {"entry": "toy", "config": "quick", "overrides": {"train.steps": 1},
         "matrix": {"train.optimizer": ["adam", "sgd"]}, "seeds": [0], "parallel": 1}
SWEEP_KEYS = ["entry", "name", "description", "config", "overrides", "matrix", "zip", "seeds",
              "conditions", "retries", "parallel", "launcher", "experiment", "seed_param", "version",
              "submitit", "overrides.train.steps", "overrides.train.lr", "matrix.train.lr",
              "matrix.model.hidden", "conditions.a", "conditions.a.data.noise", "submitit.cluster",
              "submitit.timeout_min", "zip.0", "bogus", "matrix.bogus"]
STUDY = {"entry": "toy", "config": "quick", "overrides": {"train.steps": 1},
         "space": {"train.lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True},
                   "model.hidden": {"type": "int", "low": 4, "high": 8}},
         "objective": {"metric": "metric.mse.val", "direction": "minimize"}, "seeds": [0], "n_trials": 1}
STUDY_KEYS = ["entry", "name", "config", "overrides", "space", "objective", "seeds", "n_trials",
              "sampler", "pruner", "experiment", "heartbeat_s", "max_retry", "launcher",
              "space.train.lr", "space.train.lr.type", "space.train.lr.low", "space.train.lr.high",
              "space.train.lr.log", "space.train.lr.step", "space.train.lr.choices", "space.model.hidden",
              "space.bogus.key", "objective.metric", "objective.direction", "objective.reduce",
              "sampler.type", "sampler.seed", "pruner.type", "pruner.n_startup_trials",
              "pruner.max_resource", "overrides.train.steps", "bogus"]


def scalars() -> st.SearchStrategy:
    return st.one_of(st.none(), st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True, allow_subnormal=False),
                     st.text(max_size=12), st.sampled_from(["adam", "sgd", "toy", "ired", "local", "mlflow",
                                                            "submitit", "ray", "quick", "float", "int",
                                                            "categorical", "tpe", "grid", "cmaes", "none",
                                                            "median", "maximize", "train.lr"]))


def values() -> st.SearchStrategy:
    small = st.lists(scalars(), max_size=3)
    return st.one_of(scalars(), small, st.dictionaries(st.sampled_from(["train.lr", "model.hidden", "a",
                                                                        "type", "low", "high", "x"]),
                                                       st.one_of(scalars(), small), max_size=3))


def _put(doc: dict, dotted: str, value) -> None:
    """Set one key of a spec document: the first segment is the spec key, the rest the
    dotted config key (``overrides.train.lr``) or an attribute (``space.train.lr.low``)."""
    head, _, rest = dotted.partition(".")
    if not rest:
        doc[head] = value
        return
    node = doc.get(head)
    if not isinstance(node, dict):
        node = doc[head] = {}
    if head == "space" and rest.count(".") >= 1 and rest.rsplit(".", 1)[1] in ("type", "low", "high", "log",
                                                                             "step", "choices"):
        key, attr = rest.rsplit(".", 1)
        inner = node.get(key) if isinstance(node.get(key), dict) else {}
        node[key] = {**inner, attr: value}
    else:
        node[rest] = value


def documents(base: dict, keys: list[str]) -> st.SearchStrategy[str]:
    """YAML text: the base spec with 1-3 keys set or deleted, or raw or spliced text."""
    edit = st.tuples(st.sampled_from(keys), st.one_of(values(), st.just("<delete>")))

    def build(edits) -> str:
        doc = yaml.safe_load(yaml.safe_dump(base))
        for key, value in edits:
            if value == "<delete>":
                doc.pop(key.split(".")[0], None)
            else:
                _put(doc, key, value)
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)

    structured = st.lists(edit, min_size=1, max_size=3).map(build)
    spliced = st.tuples(st.just(yaml.safe_dump(base, sort_keys=False)), st.integers(0, 200),
                        st.sampled_from(YAML_EDGES)).map(lambda t: t[0][:t[1]] + t[2] + t[0][t[1]:])
    return st.one_of(structured, structured, spliced, st.text(max_size=60),
                     st.sampled_from(YAML_EDGES))


def sets(keys: list[str]) -> st.SearchStrategy[list[str]]:
    item = st.tuples(st.sampled_from(keys + ["", "a..b", "matrix.", "space.x"]),
                     st.sampled_from(["=", "=", ""]),
                     st.one_of(st.sampled_from(YAML_EDGES), st.text(max_size=10))).map("".join)
    return st.lists(item, max_size=2)


def _one_line_error(code: int, err: str, what) -> None:
    assert code == 2, (what, code, err)
    assert "Traceback" not in err and len(err.rstrip("\n").splitlines()) == 1, (what, err)


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    from labrun.cli import main

    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own refusals (``--set -1e400``: a value that looks like an option)
        code = exc.code
    return code, capsys.readouterr().err


def _fuzz_sweeps(store, tmp_path: Path, capsys, profile) -> dict[str, int]:
    """Each document is planned in-process (spec, then every cell against the task schema);
    the rejected ones also go through ``labrun sweep`` and must exit 2 in one line, no run made."""
    from tracking.config import ConfigError

    tried = {"planned": 0, "error": 0}
    path = tmp_path / "spec.yaml"

    @profile
    @given(text=documents(SWEEP, SWEEP_KEYS), extra=sets(SWEEP_KEYS))
    def fuzz(text, extra):
        path.write_text(text)
        try:
            _plan(path, extra)
        except ConfigError as exc:
            assert "\n" not in str(exc), (text, extra, str(exc))
            # not a dry run: a spec refused late (after the parent run exists) would leave a run
            code, err = _cli(["sweep", str(path), *[a for s in extra for a in ("--set", s)]], capsys)
            _one_line_error(code, err, (text, extra))
            tried["error"] += 1
        else:
            tried["planned"] += 1

    fuzz()
    assert all_runs(store) == []
    with capsys.disabled():
        print(f"\nfuzz sweep specs: {sum(tried.values())} inputs tried ({tried['planned']} planned, "
              f"{tried['error']} one-line errors)")
    return tried


def _plan(path: Path, extra: list[str]) -> None:
    """What ``labrun sweep`` does before it touches the store: the spec, then its cells."""
    from sweeps import sweep
    from sweeps.matrix import expand
    from sweeps.spec import SweepSpec, load_spec
    from tracking.tasks import load_task

    spec, _ = load_spec(SweepSpec, path, extra)
    plan = getattr(sweep, "_plan", None)
    if plan is not None:
        plan(spec)
    else:
        expand(spec, load_task(spec.entry).schema)


def _fuzz_studies(store, tmp_path: Path, capsys, profile) -> dict[str, int]:
    """Invalid ones run ``labrun optimize`` for real: it must stop before any run or trial."""
    from sweeps.spec import StudySpec, load_spec
    from tracking.config import ConfigError

    tried = {"valid": 0, "error": 0}
    path = tmp_path / "study.yaml"

    @profile
    @given(text=documents(STUDY, STUDY_KEYS), extra=sets(STUDY_KEYS))
    def fuzz(text, extra):
        path.write_text(text)
        try:
            spec, _ = load_spec(StudySpec, path, extra)
            _check_fits_task(spec)
        except ConfigError as exc:
            assert "\n" not in str(exc), (text, extra, str(exc))
            storage = f"sqlite:///{tmp_path}/optuna.db"
            code, err = _cli(["optimize", str(path), *[a for s in extra for a in ("--set", s)],
                              "--storage", storage], capsys)
            _one_line_error(code, err, (text, extra))
            tried["error"] += 1
        else:
            tried["valid"] += 1

    fuzz()
    assert all_runs(store) == []
    with capsys.disabled():
        print(f"\nfuzz study specs: {sum(tried.values())} inputs tried ({tried['valid']} valid, "
              f"{tried['error']} one-line errors)")
    return tried


def _check_fits_task(spec) -> None:
    """What ``labrun optimize`` checks before it opens the study: the task and its space."""
    from sweeps import study
    from tracking.tasks import load_task

    task = load_task(spec.entry)
    check = getattr(study, "_check_space", None)
    if check is not None:
        check(spec, task.schema)


def test_sweep_specs_plan_or_fail_in_one_line(store, tmp_path, capsys, record_property):
    tried = _fuzz_sweeps(store, tmp_path, capsys, FAST)
    record_property("inputs_tried", sum(tried.values()))
    assert tried["planned"] > 0 and tried["error"] > 0


def test_study_specs_validate_or_fail_in_one_line(store, tmp_path, capsys, record_property):
    tried = _fuzz_studies(store, tmp_path, capsys, FAST)
    record_property("inputs_tried", sum(tried.values()))
    assert tried["valid"] > 0 and tried["error"] > 0


@pytest.mark.slow
def test_sweep_specs_fuzzed_longer(store, tmp_path, capsys, record_property):
    record_property("inputs_tried", sum(_fuzz_sweeps(store, tmp_path, capsys, SLOW).values()))


@pytest.mark.slow
def test_study_specs_fuzzed_longer(store, tmp_path, capsys, record_property):
    record_property("inputs_tried", sum(_fuzz_studies(store, tmp_path, capsys, SLOW).values()))


@pytest.mark.parametrize("text, sets", [
    ("entry: toy\nconfig: quick\nmatrix: [1, 2]\n", ["matrix.train.lr=[0.1]"]),
    ("entry: toy\nconfig: quick\noverrides: fast\n", ["overrides.train.steps=2"]),
    ("entry: toy\nconfig: quick\n", ["parallel=["]),
    ("entry: toy\nconfig: quick\n", ["seeds=[0, 1"]),
    ("entry: toy\nconfig: quick\nparallel: 2\n", ["parallel.x=1"]),
    ("entry: toy\nconfig: quick\n", ["entry=\x89"]),
    ("entry: toy\nconfig: " + "9" * 400 + "\n", []),
    ("entry: toy\nconfig: quick\nspace: [1]\n", ["space.train.lr.low=1"]),
])
def test_bad_set_on_a_spec_is_one_line(store, tmp_path, capsys, text, sets):
    """Found by the fuzzer: a ``--set`` that is not YAML (or holds a character YAML refuses),
    one that goes into a spec key holding a list or a string, and a config name longer than
    the OS allows each raised a traceback instead of the spec's one-line error."""
    path = tmp_path / "spec.yaml"
    path.write_text(textwrap.dedent(text))
    code, err = _cli(["sweep", str(path), "--dry-run", *[a for s in sets for a in ("--set", s)]], capsys)
    _one_line_error(code, err, sets)
    assert all_runs(store) == []
