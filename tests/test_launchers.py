"""The launcher registry, launchers' options, the cell environment and run_entry_point (no runs)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tracking.config import ConfigError
from tracking.exits import EXIT_CONFIG, EXIT_FAILED, EXIT_FINISHED, EXIT_PRUNED, EXIT_SIGINT

BUILTIN = ["local", "mlflow", "submitit", "ray"]


def _spec(tmp_path, text, name="s.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# --------------------------------------------------------------------------- the registry

def test_builtin_launchers_are_registered_in_order():
    from sweeps.launchers import registered

    launchers = registered()
    assert list(launchers) == BUILTIN
    for name, cls in launchers.items():
        assert cls.name == name and cls.help and "\n" not in cls.help


def test_unknown_launcher_is_a_one_line_error_naming_the_valid_ones():
    from sweeps.launchers import launcher_class, make_launcher

    for call in (lambda: launcher_class("slurmm"), lambda: make_launcher("slurmm", 1, module="m")):
        with pytest.raises(ConfigError) as err:
            call()
        assert str(err.value) == "unknown launcher 'slurmm'; valid: local, mlflow, submitit, ray"


@pytest.mark.parametrize("command", ["sweep", "optimize"])
def test_cli_unknown_launcher_exits_2_with_one_line(store, tmp_path, capsys, command):
    from labrun.cli import main

    body = "entry: toy\nconfig: quick\n"
    if command == "optimize":
        body += ("space: {train.lr: {type: float, low: 0.001, high: 0.1}}\n"
                 "objective: {metric: metric.mse.val}\nstorage: sqlite:///o.db\n")
    path = _spec(tmp_path, body)
    assert main([command, str(path), "--launcher", "slurmm"]) == EXIT_CONFIG
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "unknown launcher 'slurmm'; valid: local, mlflow, submitit, ray" in err
    assert [e.name for e in store.search_experiments()] == ["Default"]


def test_each_launchers_options_validate():
    from sweeps.launchers import registered

    for name, cls in registered().items():
        default = cls.parse_options(None)
        assert isinstance(default, cls.Options) and cls.parse_options({}) == default
        assert cls.parse_options(default) is default
        with pytest.raises(ConfigError) as err:
            cls.parse_options({"no_such_option": 1})
        text = str(err.value)
        assert text.startswith(f"launcher {name!r}: unknown option 'no_such_option'; valid: ")
        assert "\n" not in text
        for option in cls.Options.names():
            assert option in text


def test_submitit_options_type_errors_name_the_choices():
    from sweeps.launchers import launcher_class

    cls = launcher_class("submitit")
    opts = cls.parse_options({"cluster": "local", "timeout_min": 5})
    assert (opts.cluster, opts.timeout_min, opts.folder) == ("local", 5, "submitit_logs")
    with pytest.raises(ConfigError, match=r"cluster: Input should be 'auto', 'slurm', 'local' or 'debug'"):
        cls.parse_options({"cluster": "slurmm"})


def test_registering_imports_nothing_a_launcher_drives():
    code = ("import sys; import labrun.cli as c; c.build_parser(); "
            "from sweeps.launchers import registered; from sweeps.spec import SweepSpec; registered(); "
            "print(sorted(m for m in ('submitit', 'ray', 'mlflow', 'optuna', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_help_lists_every_launcher(capsys):
    from labrun.cli import main

    with pytest.raises(SystemExit):
        main(["sweep", "--help"])
    out = capsys.readouterr().out
    from sweeps.launchers import registered

    for name, cls in registered().items():
        assert f"{name}" in out and cls.help in out


def test_a_new_launcher_is_one_subclass(monkeypatch):
    from sweeps.launchers import base
    from sweeps.spec import SweepSpec

    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))  # forget it after the test

    class Inline(base.Launcher):
        name = "inline_test"
        help = "runs nothing"

        def _start(self, job):
            return EXIT_PRUNED

        def _exit_code(self, job, handle):
            return handle

        def stop(self):
            return self._drop_queue()

    assert base.launcher_class("inline_test") is Inline
    assert list(base.registered())[:4] == BUILTIN and "inline_test" in base.registered()
    spec = SweepSpec.model_validate({"entry": "toy", "launcher": "inline_test"})
    assert spec.launcher_options() == base.LauncherOptions(nproc_per_node=1)  # every launcher's one option
    launcher = base.make_launcher("inline_test", 2, module="m")
    job = base.Job("k", "toy", "m", None, [], "e", "1", "p", "r")
    assert launcher.wait_one(job, poll_s=0) == EXIT_PRUNED
    with pytest.raises(ValueError, match="taken"):
        type("Other", (Inline,), {"name": "local"})


ECHO_LAUNCHER = """
from dataclasses import dataclass

from sweeps.launchers.base import Launcher, LauncherOptions


@dataclass
class EchoOptions(LauncherOptions):
    code: int = 0


class EchoLauncher(Launcher):
    name = "echo_test"
    help = "ends every job with the exit code its options give"
    Options = EchoOptions

    def _start(self, job):
        return self.options.code

    def _exit_code(self, job, handle):
        return handle

    def stop(self):
        return self._drop_queue()
"""


def test_an_installed_package_adds_a_launcher_after_import(tmp_path, monkeypatch, request):
    """Declared in another distribution's metadata (entry-point group labrun.launchers), found
    after sweeps.spec was imported; its options block is part of both specs."""
    from sweeps.launchers import base
    from sweeps.spec import StudySpec, SweepSpec, load_spec

    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))  # forget it after the test
    (tmp_path / "echo_launcher_pkg.py").write_text(ECHO_LAUNCHER)
    dist = tmp_path / "labrun_echo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: labrun-echo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[labrun.launchers]\necho_test = echo_launcher_pkg:EchoLauncher\n"
                                           "broken_test = no_such_module_here:Launcher\n")
    assert "echo_test" not in base.registered()
    monkeypatch.syspath_prepend(str(tmp_path))
    request.addfinalizer(lambda: sys.modules.pop("echo_launcher_pkg", None))

    with pytest.warns(UserWarning, match="launcher 'broken_test'.*cannot be loaded"):
        launchers = base.registered()
    assert list(launchers)[:4] == BUILTIN and list(launchers)[4:] == ["echo_test"]
    spec, _ = load_spec(SweepSpec, _spec(tmp_path, "entry: toy\nlauncher: echo_test\necho_test: {code: 3}\n"))
    assert spec.launcher_options().code == EXIT_PRUNED
    launcher = base.make_launcher(spec.launcher, 1, module="m", options=spec.launcher_options())
    job = base.Job("k", "toy", "m", None, [], "e", "1", "p", "r")
    assert launcher.wait_one(job, poll_s=0) == EXIT_PRUNED
    study = StudySpec.model_validate({"entry": "toy", "space": {"train.lr": {"type": "float", "low": 0.1, "high": 1}},
                                      "objective": {"metric": "metric.mse.val"}, "launcher": "echo_test",
                                      "echo_test": {"code": 1}})
    assert study.launcher_options().code == 1
    with pytest.raises(ConfigError, match="unknown key 'echo_test.cod'; did you mean: echo_test.code"):
        load_spec(SweepSpec, _spec(tmp_path, "entry: toy\necho_test: {cod: 3}\n", "bad.yaml"))


def test_installed_metadata_alone_finds_the_builtin_ones_first(tmp_path, monkeypatch):
    """Installed from a wheel there is no pyproject.toml: labrun's own metadata lists them
    (setuptools writes a group's entry points sorted by name)."""
    from sweeps.launchers import base

    monkeypatch.setattr(base, "_checkout_entry_points", lambda: [])
    for dist, lines in (("aaa_other-0.1", ["zzz_test = echo_launcher_pkg:EchoLauncher"]),
                        ("labrun-0.1.0", sorted(f"{n} = {v}" for n, v in _pyproject_launchers().items()))):
        folder = tmp_path / f"{dist}.dist-info"
        folder.mkdir()
        name, version = dist.split("-")
        (folder / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        (folder / "entry_points.txt").write_text("[labrun.launchers]\n" + "\n".join(lines) + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert [n for n, _ in base.declared()] == [*sorted(BUILTIN), "zzz_test"]


def _pyproject_launchers() -> dict[str, str]:
    import tomllib

    from sweeps.launchers import base
    from tests.helpers import REPO

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"][base.GROUP]


def test_builtin_launchers_are_declared_as_entry_points():
    from sweeps.launchers import base

    declared = _pyproject_launchers()
    assert list(declared) == BUILTIN
    for name, value in declared.items():
        module, _, attr = value.partition(":")
        assert getattr(__import__(module, fromlist=[attr]), attr) is base.registered()[name]


# --------------------------------------------------------------------------- specs

def test_submitit_block_keeps_its_yaml_shape_in_sweeps_and_studies(tmp_path):
    from sweeps.spec import StudySpec, SweepSpec, load_spec

    sweep = _spec(tmp_path, f"""
        entry: toy
        launcher: submitit
        submitit: {{folder: {tmp_path}/sub, cluster: local, timeout_min: 5}}
    """)
    spec, _ = load_spec(SweepSpec, sweep)
    opts = spec.launcher_options()
    assert (opts.folder, opts.cluster, opts.timeout_min) == (f"{tmp_path}/sub", "local", 5)
    study = _spec(tmp_path, """
        entry: toy
        space: {train.lr: {type: float, low: 0.001, high: 0.1}}
        objective: {metric: metric.mse.val}
        launcher: mlflow
        submitit: {cluster: local}
    """, "o.yaml")
    spec, _ = load_spec(StudySpec, study)
    assert spec.launcher == "mlflow" and spec.launcher_options().nproc_per_node == 1
    assert load_spec(StudySpec, study, ["launcher=submitit"])[0].launcher_options().cluster == "local"


@pytest.mark.parametrize("body, expected", [
    ("submitit: {foldr: x}\n", "unknown key 'submitit.foldr'; did you mean: submitit.folder"),
    ("submitit: {cluster: slurmm}\n", "submitit.cluster: Input should be 'auto', 'slurm', 'local' or 'debug'"),
    ("submitt: {cluster: local}\n", "unknown key 'submitt'; did you mean: submitit"),
    ("launcher: rayy\n", "unknown launcher 'rayy'; valid: local, mlflow, submitit, ray"),
])
def test_bad_launcher_blocks_are_one_line_spec_errors(tmp_path, body, expected):
    from sweeps.spec import SweepSpec, load_spec

    with pytest.raises(ConfigError) as err:
        load_spec(SweepSpec, _spec(tmp_path, "entry: toy\n" + body))
    assert expected in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------- the cell's process

def test_cell_environment_is_quiet_nested_and_drops_the_launchers_run(monkeypatch):
    from sweeps.launchers.base import Job, apply_env
    from tracking import env

    monkeypatch.setenv("MLFLOW_RUN_ID", "the-sweeps-own-run")
    monkeypatch.delenv("LABRUN_PROGRESS", raising=False)
    job = Job("k", "toy", "m", None, [], "e", "1", "parent", "r", env={"EXTRA": "1"})
    cell_env = job.child_env()
    assert cell_env["LABRUN_PARENT_RUN_ID"] == "parent" and cell_env["EXTRA"] == "1"
    assert cell_env["MLFLOW_DISABLE_TELEMETRY"] == "true" and "MLFLOW_RUN_ID" not in cell_env
    assert env.LABRUN_PROGRESS.get(cell_env) is False     # cells write to log files: no bars
    monkeypatch.setenv("LABRUN_PROGRESS", "1")
    assert env.LABRUN_PROGRESS.get(job.child_env()) is True
    monkeypatch.setattr(os, "environ", os.environ.copy())  # apply_env rewrites the environment
    apply_env(cell_env)
    assert "MLFLOW_RUN_ID" not in os.environ and os.environ["LABRUN_PARENT_RUN_ID"] == "parent"


def test_job_tail_shows_the_end_of_its_log(tmp_path):
    from sweeps.launchers.base import Job

    job = Job("k", "toy", "m", None, [], "e", "1", "p", "r", log_path=tmp_path / "cell.log")
    assert job.tail() == ""
    job.log_path.write_text("\n".join(f"line {i}" for i in range(10)) + "\n")
    assert job.tail(2) == "      line 8\n      line 9"


def _raises(exc):
    def main(argv):
        raise exc
    return main


@pytest.mark.parametrize("main, code", [
    (lambda argv: None, EXIT_FINISHED),
    (_raises(SystemExit(None)), EXIT_FINISHED),
    (_raises(SystemExit(EXIT_PRUNED)), EXIT_PRUNED),
    (_raises(SystemExit("fatal: a message")), EXIT_FAILED),
    (_raises(KeyboardInterrupt()), EXIT_SIGINT),
    (_raises(ValueError("boom")), EXIT_FAILED),
])
def test_run_entry_point_maps_every_ending_to_an_exit_code(main, code, capsys):
    from tracking.tasks import run_entry_point

    assert run_entry_point(main, ["--x"]) == code
    err = capsys.readouterr().err
    if code == EXIT_FAILED:
        assert "boom" in err and "Traceback" in err or "fatal: a message" in err


def test_run_entry_point_imports_a_module_as_python_m_would(tmp_path, monkeypatch):
    from tracking.tasks import run_entry_point

    (tmp_path / "labrun_fake_task.py").write_text(
        "import sys\nseen = []\ndef main(argv):\n    seen.append((list(argv), list(sys.argv)))\n"
        "    raise SystemExit(0 if argv == ['--ok'] else 2)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    assert run_entry_point("labrun_fake_task", ["--ok"]) == EXIT_FINISHED
    assert run_entry_point("labrun_fake_task", ["--bad"]) == EXIT_CONFIG
    import labrun_fake_task

    assert labrun_fake_task.seen[0] == (["--ok"], ["labrun_fake_task", "--ok"])
    assert run_entry_point("labrun_no_such_module", []) == EXIT_FAILED
