"""Property-based fuzzing of task command lines (``--set key=value`` and friends).

Whatever a user types after ``labrun run TASK``, the task's first line (``load_config``)
must either give a complete, typed config or exit 2 with one line on stderr: never a
traceback, never a run. Keys are drawn from each task's schema (and near misses of them),
values from YAML's dark corners; the real command line is fuzzed too, against a real store.
"""
from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import PYTHON, all_runs, run_cli

TASKS = ("toy", "ired", "ssvae", "mutual", "dynamics", "anomaly")
FAST = settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=2000, deadline=None, database=None, suppress_health_check=list(HealthCheck))
YAML_EDGES = ["", "null", "~", "[", "]", "{", "}", "'", '"', ": ", "- a", "a: b", "[1, 2]", "{a: 1}",
              "{lr: 1}", "!!python/object/apply:os.system [true]", "!!binary xx", "&a [*a]", "*a",
              "1e400", "-1e400", ".nan", "-.inf", "0x1F", "0o17", "1_000", "True", "yes", "off",
              "2020-01-01", "12:30:00", "\t", "\x00", "\n", "a\nb", "=", "a=b", "%", "@x", "`x",
              "9" * 400, "-0", "+1", "1.", ".5", "[[[[[[[[[[[[[[[[[[[[", "{a: [1, {b: 2}]}"]
OPTIONS = ["--seed", "--tag", "--status", "--config", "--name", "--description", "--experiment",
           "--system-metrics", "--log-model", "--register-model", "--set"]


def _schema(task: str):
    from tracking.tasks import load_task

    return load_task(task).schema


def _keys(schema) -> list[str]:
    from tracking.config import valid_keys

    return valid_keys(schema)


def values() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(YAML_EDGES), st.integers().map(str), st.booleans().map(str),
                     st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False).map(repr),
                     st.text(max_size=24))


def keys(valid: list[str]) -> st.SearchStrategy[str]:
    near = st.tuples(st.sampled_from(valid), st.sampled_from(["", "x", ".", "..", "_", " ", "s"]),
                     st.booleans()).map(lambda t: (t[1] + t[0]) if t[2] else (t[0] + t[1]))
    deeper = st.tuples(st.sampled_from(valid), st.sampled_from(valid)).map(".".join)
    return st.one_of(st.sampled_from(valid), near, deeper, st.text(max_size=16))


def argvs(valid: list[str], configs: list[str]) -> st.SearchStrategy[list[str]]:
    """A task's argv: overrides in both spellings, options with odd values, stray tokens."""
    item = st.tuples(keys(valid), st.sampled_from(["=", "=", "", "=="]), values()).map("".join)
    token = st.one_of(
        item.map(lambda s: ["--set", s]),
        st.tuples(keys(valid), values()).map(lambda t: ["--" + t[0], t[1]]),
        st.tuples(st.sampled_from(OPTIONS), values()).map(list),
        st.sampled_from(configs).map(lambda c: ["--config", c]),
        st.sampled_from(OPTIONS).map(lambda o: [o]),          # an option missing its value
        st.text(max_size=12).filter(lambda s: s not in ("-h", "--help")).map(lambda s: [s]),
    )
    return st.lists(token, min_size=1, max_size=4).map(lambda ts: list(itertools.chain(*ts))) \
        .filter(lambda a: not {"-h", "--help"} & set(a))


def check_argv(schema, argv: list[str], capsys) -> str:
    """'ok' (a typed config that also fingerprints) or 'error' (exit 2, one line); else fail."""
    from tracking.config import fingerprint, flatten, load_config

    capsys.readouterr()
    try:
        cfg = load_config(schema, argv, prog="labrun run fuzz")
    except SystemExit as exc:
        out, err = capsys.readouterr()
        assert exc.code == 2, (argv, exc.code, err)
        assert "Traceback" not in err and len(err.rstrip("\n").splitlines()) == 1, (argv, err)
        assert err.startswith("labrun run fuzz: error: "), (argv, err)
        return "error"
    assert isinstance(cfg, schema), argv
    fingerprint(cfg)
    flatten(cfg.model_dump(mode="json"))
    return "ok"


@pytest.mark.parametrize("argv", [["--config", "9" * 400], ["--config", "quick", "--config", "x" * 5000]])
def test_a_config_name_longer_than_the_os_allows_is_one_line(argv, capsys):
    """Found by the fuzzer: ``Path.exists`` raises for a name over NAME_MAX; it was a traceback."""
    assert check_argv(_schema("toy"), argv, capsys) == "error"


def _fuzz_task(task: str, capsys, profile) -> dict[str, int]:
    schema = _schema(task)
    configs = ["quick", "default", "", "nope", "quick.yaml", "/", "/dev/null", str(schema.config_dir())]
    tried = {"ok": 0, "error": 0}

    @profile
    @given(argv=argvs(_keys(schema), configs))
    def fuzz(argv):
        tried[check_argv(schema, argv, capsys)] += 1

    fuzz()
    with capsys.disabled():
        print(f"\nfuzz {task} argv: {sum(tried.values())} inputs tried ({tried['ok']} valid, "
              f"{tried['error']} one-line errors)")
    return tried


@pytest.mark.parametrize("task", TASKS)
def test_task_overrides_validate_or_fail_in_one_line(task, capsys, record_property):
    tried = _fuzz_task(task, capsys, FAST)
    record_property("inputs_tried", sum(tried.values()))
    assert tried["error"] > 0  # the generator reaches the error paths, not only valid configs


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_task_overrides_fuzzed_longer(task, capsys, record_property):
    tried = _fuzz_task(task, capsys, SLOW)
    record_property("inputs_tried", sum(tried.values()))


def test_the_real_command_line_exits_2_in_one_line_and_makes_no_run(store, capsys):
    """A few fuzzed inputs through ``python -m labrun run toy``: the ones the in-process check
    rejects must exit 2 with one line on stderr, no traceback, and leave the store empty."""
    schema = _schema("toy")
    tried = []

    @settings(max_examples=4, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(argv=argvs(_keys(schema), ["quick", "nope"]))
    def fuzz(argv):
        if check_argv(schema, argv, capsys) != "error":
            return  # a valid config would start a real run: the in-process check covers it
        proc = run_cli([PYTHON, "-m", "labrun", "run", "toy", *argv], timeout=120)
        tried.append(argv)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert "Traceback" not in proc.stderr and len(proc.stderr.rstrip("\n").splitlines()) == 1, \
            (argv, proc.stderr)
        assert all_runs(store) == []

    fuzz()
    with capsys.disabled():
        print(f"\nfuzz labrun run toy (subprocess): {len(tried)} inputs tried")


RESERVED = ["labrun.fingerprint", "labrun.task", "labrun.status", "labrun.group", "mlflow.user",
            "mlflow.parentRunId", "labrun.", "mlflow."]


def tag_args() -> st.SearchStrategy[list[str]]:
    """``--tag`` with reserved, empty, over-long and odd keys and values."""
    key = st.one_of(st.sampled_from(RESERVED), st.text(max_size=12), st.just("k" * 251), st.just("ok"),
                    st.sampled_from(["/a", "a//b", "..", "a:b", "a b", "x/../y"]))
    value = st.one_of(values(), st.just("v" * 8001))
    return st.tuples(key, st.sampled_from(["=", ""]), value).map(lambda t: ["--tag", "".join(t)])


def test_tags_and_resume_ids_are_checked_before_any_run(store, capsys):
    """Reserved/over-long/odd tag keys and any --resume id (unknown, another task's, not a
    labrun run, a real one) end in a config or one line, before a run exists."""
    other = store.create_run(store.create_experiment("ired"), tags={"labrun.task": "ired"}).info.run_id
    bare = store.create_run("0").info.run_id
    own = store.create_run("0", tags={"labrun.task": "toy"}).info.run_id
    ids = st.one_of(st.sampled_from([other, bare, own, other.upper(), own[:-1], "0" * 32]), st.text(max_size=40))
    resume = ids.map(lambda i: ["--resume", i])
    schema = _schema("toy")
    seen: dict[str, int] = {"ok": 0, "error": 0}

    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(parts=st.lists(st.one_of(tag_args(), resume), min_size=1, max_size=3))
    def fuzz(parts):
        seen[check_argv(schema, ["--config", "quick", *itertools.chain(*parts)], capsys)] += 1

    fuzz()
    assert seen["error"] > 0 and seen["ok"] > 0
    assert len(all_runs(store)) == 3  # the three made above: no input created a run
    with capsys.disabled():
        print(f"\nfuzz --tag/--resume: {sum(seen.values())} inputs ({seen['ok']} valid, {seen['error']} one-line errors)")
