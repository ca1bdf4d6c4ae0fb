"""Loading a run's files runs no one's code (issue #37).

Every checkpoint labrun reads (format 2, format 1, the Lightning bridge's ``.ckpt`` bytes)
unpickles through an allow-list: a global off it is refused with one line naming it and
the file, before it is imported or called. Saving refuses what loading would. The fuzz
tests build pickle streams around a sentinel callable and check it never runs.
"""
from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import types
from fractions import Fraction

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import PYTHON, all_runs, run_cli
from tests.test_async_checkpoint import _v1_file  # a format-1 file, as labrun wrote them
from tracking import checkpoint as ckpt
from tracking.checkpoint import allowlist


@pytest.fixture
def marker(tmp_path):
    """A file the malicious pickles would create: its existence means their code ran."""
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a refused checkpoint ran code"


def _evil_payloads(marker):
    """``__reduce__`` to os.system, subprocess.Popen, builtins.eval: each would touch ``marker``."""
    class ViaSystem:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    class ViaPopen:
        def __reduce__(self):
            return subprocess.Popen, (["touch", str(marker)],)

    class ViaEval:
        def __reduce__(self):
            return eval, (f"open({str(marker)!r}, 'w').close()",)

    return {"posix.system": ViaSystem(), "subprocess.Popen": ViaPopen(), "builtins.eval": ViaEval()}


PAYLOADS = ["posix.system", "subprocess.Popen", "builtins.eval"]


def _state(extra=None):
    model = torch.nn.Linear(3, 2)
    return {**ckpt.collect({"model": model}, global_step=3), "extra": extra}


def _write_trusted(state, path, monkeypatch):
    """What another user's labrun (or anyone's script) could put in a shared store."""
    monkeypatch.setenv("LABRUN_TRUST_CHECKPOINTS", "1")
    ckpt.save(state, path)
    monkeypatch.delenv("LABRUN_TRUST_CHECKPOINTS")
    return path


# --------------------------------------------------------------------------- refused, nothing runs

@pytest.mark.parametrize("name", PAYLOADS)
def test_format_2_refuses_a_reduce_to_code(tmp_path, marker, monkeypatch, name):
    path = _write_trusted(_state(_evil_payloads(marker)[name]), tmp_path / "cp_3.ptz", monkeypatch)
    with pytest.raises(ckpt.UnsafeCheckpoint) as err:
        ckpt.load(path)
    line = str(err.value)
    assert "\n" not in line and name in line and str(path) in line
    assert err.value.global_name == name


@pytest.mark.parametrize("name", PAYLOADS)
def test_format_1_refuses_a_reduce_to_code(tmp_path, marker, name):
    path = _v1_file(_state(_evil_payloads(marker)[name]), tmp_path / "cp_3.ptz")
    with pytest.raises(ckpt.UnsafeCheckpoint, match=name.replace(".", r"\.")):
        ckpt.load(path)


def test_the_issues_reproduction(tmp_path, marker, monkeypatch):
    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    with pytest.raises(ckpt.UnsafeCheckpoint) as saved:        # saving refuses it in one line
        ckpt.save({"model": {"w": torch.zeros(3)}, "extra": Evil()}, tmp_path / "evil.ptz")
    assert "\n" not in str(saved.value) and "posix.system" in str(saved.value) and "(extra)" in str(saved.value)
    assert not list(tmp_path.iterdir())                          # no file, no temporary file
    path = _write_trusted({"model": {"w": torch.zeros(3)}, "extra": Evil()}, tmp_path / "evil.ptz", monkeypatch)
    with pytest.raises(ckpt.UnsafeCheckpoint):
        ckpt.load(path)


def test_a_global_of_a_module_not_yet_imported_is_refused_without_importing_it(tmp_path, monkeypatch):
    """Importing runs the module's top level: the name is refused before any import."""
    side_effect = tmp_path / "imported"
    (tmp_path / "labrun_evil_mod.py").write_text(
        f"open({str(side_effect)!r}, 'w').close()\ndef build(*a):\n    return a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import labrun_evil_mod

    class Lazy:
        def __reduce__(self):
            return labrun_evil_mod.build, (1,)

    for path in (_write_trusted(_state(Lazy()), tmp_path / "v2.ptz", monkeypatch),
                 _v1_file(_state(Lazy()), tmp_path / "v1.ptz")):
        side_effect.unlink()
        monkeypatch.delitem(sys.modules, "labrun_evil_mod")
        with pytest.raises(ckpt.UnsafeCheckpoint, match="labrun_evil_mod.build"):
            ckpt.load(path)
        assert "labrun_evil_mod" not in sys.modules and not side_effect.exists()
        import labrun_evil_mod  # noqa: F401,F811  (for the next round)


def test_a_refused_file_is_not_skipped_for_an_older_one(tmp_path, marker, monkeypatch):
    ckpt.save(_state(), tmp_path / "cp_1.ptz")
    _write_trusted(_state(_evil_payloads(marker)["posix.system"]), tmp_path / "cp_2.ptz", monkeypatch)
    with pytest.raises(ckpt.UnsafeCheckpoint, match="cp_2.ptz"):
        ckpt.latest_valid(tmp_path)


@pytest.mark.parametrize("name", PAYLOADS)
def test_the_lightning_bytes_are_refused_on_load_and_on_save(marker, name):
    from tracking.lightning import _LightningState

    blob = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(2)}, "hyper_parameters": _evil_payloads(marker)[name]}, blob)
    state = _LightningState(bridge=None)
    with pytest.raises(ckpt.UnsafeCheckpoint, match=name.replace(".", r"\.")):
        state.load_state_dict({"ckpt": blob.getvalue(), "stopped": False})
    assert state.restored is None
    with pytest.raises(ckpt.UnsafeCheckpoint, match="cannot save"):
        allowlist.scan_torch_bytes(blob.getvalue(), source="the Lightning checkpoint", saving=True)


def test_lightning_bytes_of_plain_state_pass():
    blob = io.BytesIO()
    torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3, "loops": {"fit": {"x": [1, 2]}}}, blob)
    allowlist.scan_torch_bytes(blob.getvalue(), source="x", saving=True)
    back = allowlist.torch_load(blob.getvalue(), source="x")
    assert back["epoch"] == 3 and torch.equal(back["state_dict"]["w"], torch.ones(2))


# --------------------------------------------------------------------------- what loads

def test_the_full_state_of_a_task_loads(tmp_path):
    """Model, Adam, a scheduler, every RNG and the common containers, in both formats."""
    import collections
    import random

    import numpy as np

    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, 2)
    objects = {"model": model, "optimizer": opt, "scheduler": sched, "g": torch.Generator().manual_seed(1),
               "np": np.random.default_rng(2), "py": random.Random(3)}
    extra = {"dd": collections.defaultdict(list, a=[1]), "dq": collections.deque([1, 2], maxlen=4),
             "od": collections.OrderedDict(b=2), "arr": np.arange(3.0), "scalar": np.float32(1.5),
             "gen": np.random.default_rng(4), "tgen": torch.Generator().manual_seed(5), "set": {1, 2},
             "param": torch.nn.Parameter(torch.ones(2)), "dtype": torch.bfloat16, "device": torch.device("cpu")}
    state = ckpt.collect(objects, global_step=7, extra=extra)
    for path in (ckpt.save(state, tmp_path / "v2.ptz"), _v1_file(state, tmp_path / "v1.ptz")):
        back = ckpt.load(path)
        assert back["extra"]["dd"]["a"] == [1] and back["extra"]["dq"].maxlen == 4
        assert back["extra"]["scalar"] == np.float32(1.5) and back["extra"]["dtype"] is torch.bfloat16
        assert back["extra"]["gen"].random() == np.random.default_rng(4).random()
        ckpt.apply(back, objects)
    q = ckpt.save(ckpt.quantize_state(state), tmp_path / "q.ptz")
    assert ckpt.load(q)["objects"]["optimizer"]["__quantized__"]


def test_a_task_registers_its_own_class(tmp_path):
    state = _state(Fraction(1, 3))
    with pytest.raises(ckpt.UnsafeCheckpoint, match="fractions.Fraction"):
        ckpt.save(state, tmp_path / "cp.ptz")
    with ckpt.safe_globals(Fraction):
        ckpt.save(state, tmp_path / "cp.ptz")
        assert ckpt.load(tmp_path / "cp.ptz")["extra"] == Fraction(1, 3)
    with pytest.raises(ckpt.UnsafeCheckpoint, match="fractions.Fraction"):
        ckpt.load(tmp_path / "cp.ptz")                        # the block is over


def test_trust_is_explicit_and_said(tmp_path, monkeypatch, capsys):
    path = _write_trusted(_state(Fraction(2, 5)), tmp_path / "cp.ptz", monkeypatch)
    with pytest.raises(ckpt.UnsafeCheckpoint):
        ckpt.load(path)
    assert ckpt.load(path, trusted=True)["extra"] == Fraction(2, 5)
    capsys.readouterr()
    monkeypatch.setenv("LABRUN_TRUST_CHECKPOINTS", "1")
    monkeypatch.setattr(allowlist, "_TRUST_SAID", [])
    assert ckpt.load(path)["extra"] == Fraction(2, 5)
    assert ckpt.load(path)["extra"] == Fraction(2, 5)
    said = [line for line in capsys.readouterr().err.splitlines() if "trusted" in line]
    assert len(said) == 1 and "LABRUN_TRUST_CHECKPOINTS=1" in said[0]


def test_trust_checkpoints_is_a_launch_flag():
    from tracking.config import parse_argv

    opts, overrides, _ = parse_argv(["--resume", "abc", "--trust-checkpoints", "--set", "seed=1"])
    assert opts.trust_checkpoints and opts.resume == "abc" and overrides == ["seed=1"]
    assert not parse_argv(["--resume", "abc"])[0].trust_checkpoints


# --------------------------------------------------------------------------- the command

def test_resume_from_a_run_with_an_evil_checkpoint_exits_2_and_makes_no_run(store, tmp_path, marker, monkeypatch):
    from projects.toy import train as toy

    toy.main(["--config", "quick", "--set", "train.steps=4", "--set", "checkpoint.every=2", "--name", "source"])
    (source,) = all_runs(store)
    evil = _write_trusted(_state(_evil_payloads(marker)["posix.system"]), tmp_path / "cp_99.ptz", monkeypatch)
    store.log_artifact(source.info.run_id, str(evil), "checkpoints")
    proc = run_cli([PYTHON, "-m", "labrun", "run", "toy", "--resume", source.info.run_id], cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "posix.system" in errors[0] and "cp_99.ptz" in errors[0] and source.info.run_id in errors[0]
    assert [r.info.run_id for r in all_runs(store)] == [source.info.run_id]   # no half-run


@pytest.mark.slow
def test_trust_checkpoints_lets_a_user_resume_from_their_own_unregistered_state(store, tmp_path, monkeypatch):
    from projects.toy import train as toy

    toy.main(["--config", "quick", "--set", "train.steps=4", "--set", "checkpoint.every=2", "--name", "source"])
    (source,) = all_runs(store)
    folder = store.download_artifacts(source.info.run_id, "checkpoints", str(tmp_path / "dl"))
    state = ckpt.load(f"{folder}/cp_4.ptz")
    state["extra"]["note"] = Fraction(1, 3)                     # a class no task registered
    store.log_artifact(source.info.run_id, str(_write_trusted(state, tmp_path / "cp_5.ptz", monkeypatch)),
                       "checkpoints")
    refused = run_cli([PYTHON, "-m", "labrun", "run", "toy", "--resume", source.info.run_id], cwd=tmp_path)
    assert refused.returncode == 2 and "fractions.Fraction" in refused.stderr, refused.stderr
    trusted = run_cli([PYTHON, "-m", "labrun", "run", "toy", "--resume", source.info.run_id,
                       "--trust-checkpoints"], cwd=tmp_path)
    assert trusted.returncode == 0, trusted.stderr
    said = [line for line in trusted.stderr.splitlines() if "checkpoints are trusted" in line]
    assert len(said) == 1 and "--trust-checkpoints" in said[0]
    resumed = [r for r in all_runs(store) if r.data.tags.get("labrun.resumed_from") == source.info.run_id]
    assert len(resumed) == 1 and resumed[0].data.tags["labrun.resumed_step"] == "4"


# --------------------------------------------------------------------------- fuzzed streams

_CALLS: list = []


def _boom(*args, **kwargs):
    _CALLS.append(args)
    return "boom"


class _Boom:
    def __init__(self, *args, **kwargs):
        _CALLS.append(args)

    def __setstate__(self, state):
        _CALLS.append(state)


SENTINEL = types.ModuleType("labrun_sentinel")
_boom.__module__ = _Boom.__module__ = "labrun_sentinel"
_boom.__qualname__ = _boom.__name__ = "boom"
_Boom.__qualname__ = _Boom.__name__ = "Boom"
SENTINEL.boom, SENTINEL.Boom = _boom, _Boom
sys.modules["labrun_sentinel"] = SENTINEL


def _unicode(s: str) -> bytes:
    b = s.encode()[:255]
    return b"\x8c" + bytes([len(b)]) + b


_MODULES = st.sampled_from(["labrun_sentinel", "os", "builtins", "subprocess", "torch", "numpy", "collections",
                            "torch._utils", "__builtin__", "posix", "importlib", "pickle", "functools"])
_NAMES = st.sampled_from(["boom", "Boom", "system", "eval", "exec", "getattr", "Popen", "__import__",
                          "OrderedDict", "partial", "loads", "import_module", "load", "Tensor", "apply"])
_ATOMS = st.one_of(
    st.sampled_from([b"N", b"\x88", b"\x89", b"K\x01", b"J\x00\x00\x00\x00", b"(", b")", b"t", b"l", b"]",
                     b"}", b"e", b"a", b"s", b"u", b"\x85", b"\x86", b"\x87", b"R", b"\x81", b"b", b"\x94",
                     b"h\x00", b"h\x01", b"0", b"2", b"Q", b"\x93", b"\x92", b"\x8f", b"\x90", b"\x91",
                     b"C\x02ab", b"G?\xf0\x00\x00\x00\x00\x00\x00", b"\x82\x01", b"\x83\x01\x00"]),
    st.tuples(_MODULES, _NAMES).map(lambda mn: f"c{mn[0]}\n{mn[1]}\n".encode()),              # GLOBAL
    st.tuples(_MODULES, _NAMES).map(lambda mn: _unicode(mn[0]) + _unicode(mn[1]) + b"\x93"),   # STACK_GLOBAL
    st.tuples(_MODULES, _NAMES).map(lambda mn: f"i{mn[0]}\n{mn[1]}\n".encode()),              # INST
    st.text(max_size=8).map(_unicode),
)


def _assert_contained(data: bytes) -> None:
    """Load and scan ``data``: a value or a CheckpointError, and the sentinel never ran."""
    for load in (lambda: allowlist.restricted_loads(data, source="fuzz", tensors=[torch.zeros(1)]),
                 lambda: allowlist.scan(data, source="fuzz")):
        try:
            load()
        except ckpt.CheckpointError:
            pass
    assert not _CALLS, f"the sentinel ran: {_CALLS}"


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_ATOMS, max_size=24), st.booleans())
def test_fuzzed_pickle_streams_never_call_a_global_off_the_list(atoms, framed):
    _assert_contained((b"\x80\x04" if framed else b"") + b"".join(atoms) + b".")


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.integers(-3, 3) | st.text(max_size=4) | st.none(), max_size=3),
       st.sampled_from(["call", "class", "nested", "state"]), st.integers(0, 5))
def test_fuzzed_reduce_calls_never_reach_the_sentinel(args, shape, protocol):
    class Call:
        def __reduce__(self):
            return _boom, tuple(args)

    class Stateful:
        def __reduce__(self):
            return _Boom, tuple(args), {"k": args}

    import collections

    obj = {"call": Call(), "class": _Boom, "state": Stateful(),
           "nested": collections.OrderedDict(a=[torch.zeros(1), {"b": Call()}])}[shape]
    _assert_contained(pickle.dumps(obj, protocol=protocol))


def test_the_sentinel_is_live():
    """The fuzz tests' premise: a plain unpickler does call it."""
    try:
        pickle.loads(pickle.dumps(_Boom, protocol=4))()
        assert _CALLS
    finally:
        _CALLS.clear()
