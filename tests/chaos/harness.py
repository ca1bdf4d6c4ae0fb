"""Fault injection: SIGKILL a run, a sweep or an optimize worker at a random moment, then check.

One round starts its victim(s) in a session of their own, kills at a moment drawn from the
round's seed (``os.killpg(SIGKILL)`` for a whole launcher, ``os.kill`` for one cell), reruns
the same command to completion and then asks the store what a researcher would: is every
cell FINISHED exactly once, is any run left RUNNING, is any process of the victim still
alive, and is each finished run's metric series the one an uninterrupted run logs?

A round never raises on a bad outcome: it counts it, so ``bench/chaos.py`` can run many
rounds and the same harness reports today's known gaps (two workers on one sweep duplicate
cells until they claim them) and shows them closed once the platform changes, unchanged.

Everything goes to the store named by ``MLFLOW_TRACKING_URI`` (one experiment per round);
reruns go through the real ``labrun`` command line in this process (``labrun.cli.main``),
so they reuse one warm fork server instead of paying the imports again every round.
"""
from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from tests.helpers import PYTHON, REPO
from tracking import tags as T

SCENARIOS = ("run", "sweep_group", "sweep_cell", "two_workers", "optimize")
MARKER = "LABRUN_CHAOS_ROUND"      # set in every victim's environment: its descendants inherit it
WITHDRAWN = getattr(T, "WITHDRAWN", "labrun.withdrawn")
CELL = {"train.steps": 10, "train.eval_every": 2, "checkpoint.every": 2, "train.sleep_s": 0.2,
        "data.n_train": 64, "data.n_val": 32}
# Seconds after the victim's first logged metric within which the kill lands (uniformly); in
# SETUP_SHARE of the rounds it lands instead within a second of the first run's creation (while
# the run is still being set up: provenance, datasets, the first checkpoint not yet written).
HORIZON = {"run": 4.0, "sweep_group": 8.0, "sweep_cell": 3.0, "two_workers": 8.0, "optimize": 8.0}
SETUP_SHARE = 0.25
COUNTS = ("lost", "duplicated", "stuck", "orphans", "mismatched")


@dataclass
class RoundResult:
    """What one round found; every count should be 0."""

    index: int
    scenario: str
    seed: int
    killed: str = "nothing"
    expected: int = 0
    lost: int = 0
    duplicated: int = 0
    stuck: int = 0
    orphans: int = 0
    mismatched: int = 0
    withdrawn: int = 0
    rerun_code: int | None = None
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        counts = " ".join(f"{k}={getattr(self, k)}" for k in COUNTS)
        extra = f" ({'; '.join(self.notes)})" if self.notes else ""
        return (f"round {self.index} {self.scenario} seed={self.seed}: killed {self.killed}; "
                f"{counts} withdrawn={self.withdrawn} rerun_exit={self.rerun_code}{extra}")


def round_seed(base_seed: int, index: int) -> int:
    return base_seed * 10_000 + index


class Chaos:
    """Rounds against one store; remembers each fingerprint's uninterrupted reference series."""

    def __init__(self, root: Path, log: Callable[[str], None] = print) -> None:
        from mlflow.tracking import MlflowClient

        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.uri = os.environ["MLFLOW_TRACKING_URI"]
        self.client = MlflowClient(tracking_uri=self.uri)
        self.log = log
        self.prefix = uuid.uuid4().hex[:6]
        self.refs: dict[str, dict[str, list[tuple[int, float]]]] = {}
        self.rerun_log = self.root / "reruns.log"

    # ------------------------------------------------------------------ one round
    def round(self, index: int, scenario: str, seed: int) -> RoundResult:
        """Kill, rerun, check. Never raises for what it finds; it counts it."""
        rng = random.Random(seed)
        res = RoundResult(index, scenario, seed)
        folder = self.root / f"round-{index:03d}"
        folder.mkdir(exist_ok=True)
        exp = f"chaos-{self.prefix}-r{index:03d}"
        marker = f"{self.prefix}-{index}"
        self.log(f"round {index}: scenario {scenario}, seed {seed} (replay: --replay {scenario}:{seed})")
        victims: list[subprocess.Popen] = []
        try:
            victims, rerun = getattr(self, f"_{scenario}")(rng, res, folder, exp, marker)
            for v in victims:
                _wait_exit(v, 400)
            res.rerun_code = self._in_process(rerun)
        finally:
            for v in victims:  # a victim that outlived the round is ours to end
                if v.poll() is None:
                    os.killpg(v.pid, signal.SIGKILL)
                    v.wait(30)
        left = orphans(marker, {v.pid for v in victims})
        res.orphans = len(left)
        res.notes += [f"orphan {o}" for o in left]
        self._check(res, exp, folder)
        self.log(res.line())
        return res

    # ------------------------------------------------------------------ scenarios
    def _run(self, rng: random.Random, res: RoundResult, folder: Path, exp: str, marker: str):
        args = ["--config", "quick", "--seed", str(rng.randrange(3)), "--experiment", exp]
        for k, v in CELL.items():
            args += ["--set", f"{k}={v}"]
        res.expected = 1
        victim = self._start([PYTHON, "-m", "projects.toy.train", *args], folder, marker, "victim")
        self._kill_group_later(rng, res, exp, [victim], "run")
        runs = self._cells(exp)
        resume = next((r.info.run_id for r in runs if _has_checkpoints(self.client, r.info.run_id)), None)
        if resume:
            res.notes.append(f"rerun resumes {resume[:8]}")
        if any(r.info.status == "FINISHED" for r in runs):
            return [victim], None  # it finished before the kill (or was killed while exiting): done
        return [victim], ["run", "toy", *args, *(["--resume", resume] if resume else [])]

    def _sweep_group(self, rng, res, folder, exp, marker):
        spec = self._sweep_spec(folder, exp, res)
        victim = self._start([PYTHON, "-m", "labrun", "sweep", str(spec)], folder, marker, "victim")
        self._kill_group_later(rng, res, exp, [victim], "sweep_group")
        return [victim], ["sweep", str(spec)]

    def _sweep_cell(self, rng, res, folder, exp, marker):
        spec = self._sweep_spec(folder, exp, res)
        victim = self._start([PYTHON, "-m", "labrun", "sweep", str(spec)], folder, marker, "victim")
        if self._moment(rng, exp, [victim], "sweep_cell") is not None:
            deadline = time.time() + 60
            while victim.poll() is None and time.time() < deadline:
                live = [(r, int(r.data.tags[T.PID])) for r in self._cells(exp)
                        if r.info.status == "RUNNING" and T.PID in r.data.tags]
                live = [(r, pid) for r, pid in live if _in_session(pid, victim.pid)]
                if live:
                    run, pid = rng.choice(sorted(live, key=lambda x: x[0].info.run_id))
                    os.kill(pid, signal.SIGKILL)
                    res.killed = f"cell pid {pid} (run {run.info.run_id[:8]})"
                    break
                time.sleep(0.2)
        return [victim], ["sweep", str(spec)]

    def _two_workers(self, rng, res, folder, exp, marker):
        spec = self._sweep_spec(folder, exp, res)
        workers = [self._start([PYTHON, "-m", "labrun", "sweep", str(spec)], folder, marker, f"worker{i}")
                   for i in range(2)]
        which = rng.randrange(2)
        self._kill_group_later(rng, res, exp, workers, "two_workers", victim=workers[which])
        res.killed = res.killed.replace("group", f"worker{which}'s group")
        return workers, ["sweep", str(spec)]

    def _optimize(self, rng, res, folder, exp, marker):
        spec = folder / "study.yaml"
        res.expected = 3
        spec.write_text(yaml.safe_dump({
            "entry": "toy", "name": exp, "experiment": exp, "config": "quick", "overrides": CELL,
            "space": {"train.lr": {"type": "float", "low": 0.001, "high": 0.1, "log": True},
                      "model.hidden": {"type": "int", "low": 4, "high": 16}},
            "objective": {"metric": "metric.mse.val", "direction": "minimize"}, "seeds": [0],
            "n_trials": res.expected, "sampler": {"type": "random", "seed": res.seed % 1000},
            "pruner": {"type": "none"}, "storage": f"sqlite:///{folder}/optuna.db",
            "heartbeat_s": 1, "max_retry": 2}, sort_keys=False))
        victim = self._start([PYTHON, "-m", "labrun", "optimize", str(spec)], folder, marker, "victim")
        self._kill_group_later(rng, res, exp, [victim], "optimize")
        return [victim], ["optimize", str(spec)]

    def _sweep_spec(self, folder: Path, exp: str, res: RoundResult) -> Path:
        spec = folder / "sweep.yaml"
        spec.write_text(yaml.safe_dump({
            "entry": "toy", "name": exp, "experiment": exp, "config": "quick", "overrides": CELL,
            "matrix": {"train.optimizer": ["adam", "sgd"]}, "seeds": [0, 1], "retries": 1,
            "parallel": 2}, sort_keys=False))
        res.expected = 4
        return spec

    # ------------------------------------------------------------------ processes
    def _start(self, cmd: list[str], folder: Path, marker: str, name: str) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=str(REPO), LABRUN_PROGRESS="0", **{MARKER: marker})
        out = open(folder / f"{name}.log", "w")
        return subprocess.Popen(cmd, cwd=self.root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def _kill_group_later(self, rng, res, exp, procs, scenario, victim=None) -> None:
        """Wait for the first cell's run, then SIGKILL the victim's process group at a random moment."""
        victim = victim or procs[0]
        when = self._moment(rng, exp, procs, scenario)
        if when is None:
            return
        if victim.poll() is not None:
            res.killed = f"nothing (victim ended before {when})"
            return
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait(30)
        res.killed = f"group {when}"

    def _moment(self, rng: random.Random, exp: str, procs: list[subprocess.Popen], scenario: str) -> str | None:
        """Sleep until the round's random moment; describe it (None: the victims ended first)."""
        setup = rng.random() < SETUP_SHARE
        delay = rng.uniform(0, 1.0 if setup else HORIZON[scenario])
        what = "run" if setup else "metric"
        t0 = self._first(exp, procs, lambda r: setup or bool(r.data.metrics))
        if t0 is None:
            return None
        time.sleep(max(0.0, t0 + delay - time.time()))
        return f"+{delay:.1f}s after the first {what}"

    def _first(self, exp: str, procs: list[subprocess.Popen], ready: Callable[[Any], bool],
               timeout: float = 600) -> float | None:
        """When a cell of ``exp`` first satisfies ``ready`` (None if the victims ended before)."""
        deadline = time.time() + timeout
        while time.time() < deadline and any(p.poll() is None for p in procs):
            if any(ready(r) for r in self._cells(exp)):
                return time.time()
            time.sleep(0.1)
        return None

    def _in_process(self, argv: list[str] | None) -> int | None:
        """``labrun ARGV`` in this process (output to reruns.log): the user's 'run it again'."""
        if argv is None:
            return None
        from labrun.cli import main

        with open(self.rerun_log, "a") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
            print(f"$ labrun {' '.join(argv)}", flush=True)
            try:
                return int(main(argv) or 0)
            except SystemExit as exc:
                return exc.code if isinstance(exc.code, int) else 1
            except Exception:  # noqa: BLE001 - a crashing rerun is a finding (rerun_exit=-1), not the end
                import traceback

                traceback.print_exc()
                return -1

    # ------------------------------------------------------------------ checks
    def _runs(self, exp: str) -> list[Any]:
        found = self.client.get_experiment_by_name(exp)
        if found is None:
            return []
        return self.client.search_runs([found.experiment_id], max_results=10_000)

    def _cells(self, exp: str) -> list[Any]:
        return [r for r in self._runs(exp)
                if r.data.tags.get(T.TASK) == "toy" and T.KIND not in r.data.tags]

    def _check(self, res: RoundResult, exp: str, folder: Path) -> None:
        runs = self._runs(exp)
        res.stuck = sum(r.info.status == "RUNNING" for r in runs)
        cells = [r for r in runs if r.data.tags.get(T.TASK) == "toy" and T.KIND not in r.data.tags]
        res.withdrawn = sum(bool(r.data.tags.get(WITHDRAWN)) for r in cells)  # value: the winner's run id
        done = [r for r in cells if r.info.status == "FINISHED" and not r.data.tags.get(WITHDRAWN)]
        if res.scenario == "optimize":
            per = Counter(r.data.tags.get(T.OPTUNA_TRIAL) for r in done)
            counted, running = _study_counts(exp, folder / "optuna.db")
            res.lost = max(0, res.expected - counted)
            res.stuck += running
            if running:
                res.notes.append(f"{running} optuna trial(s) left RUNNING")
        else:
            per = Counter(r.data.tags.get(T.FINGERPRINT) for r in done)
            res.lost = max(0, res.expected - len(per))
        res.duplicated = sum(n - 1 for n in per.values() if n > 1)
        for run in done:
            differ = self._differing_series(run)
            if differ:
                res.mismatched += 1
                resumed = "resumed" if run.data.tags.get(T.RESUMED_FROM) else "not resumed"
                res.notes.append(f"{resumed} run {run.info.run_id[:8]}: {', '.join(differ[:3])} "
                                 f"differ from the uninterrupted run")

    def _differing_series(self, run: Any) -> list[str]:
        """The metrics whose (step, value) history differs from the reference's (exactly)."""
        fp = run.data.tags[T.FINGERPRINT]
        if fp not in self.refs:
            self.refs[fp] = self._reference(run.info.run_id, fp)
        mine, ref = series(self.client, run.info.run_id), self.refs[fp]
        return [k for k in sorted(set(mine) | set(ref)) if mine.get(k) != ref.get(k)]

    def _reference(self, run_id: str, fp: str) -> dict[str, list[tuple[int, float]]]:
        """The same resolved config run once, uninterrupted (no pauses), in its own experiment."""
        from tracking.store import resolved_config_of

        path = self.root / f"reference-{fp}.yaml"
        path.write_text(yaml.safe_dump(resolved_config_of(run_id)))
        exp = f"chaos-{self.prefix}-reference"
        code = self._in_process(["run", "toy", "--config", str(path), "--set", "train.sleep_s=0",
                                 "--experiment", exp])
        ref = [r for r in self._cells(exp) if r.data.tags.get(T.FINGERPRINT) == fp
               and r.info.status == "FINISHED"]
        if code != 0 or not ref:
            raise RuntimeError(f"the reference run of {fp} did not finish (exit {code}); see {self.rerun_log}")
        return series(self.client, ref[0].info.run_id)


# ---------------------------------------------------------------------- store and processes

def series(client: Any, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """Every metric's (step, value) history, in step order; system metrics left out."""
    run = client.get_run(run_id)
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
            for key in sorted(run.data.metrics) if not key.startswith("system/")}


def _study_counts(name: str, db: Path) -> tuple[int, int]:
    """(COMPLETE or PRUNED trials, RUNNING trials) of the round's study; (0, 0) if none exists."""
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=name, storage=f"sqlite:///{db}")
    except Exception:  # noqa: BLE001 - the victim died before creating it
        return 0, 0
    states = Counter(t.state for t in study.get_trials(deepcopy=False))
    return states[TrialState.COMPLETE] + states[TrialState.PRUNED], states[TrialState.RUNNING]


def _has_checkpoints(client: Any, run_id: str) -> bool:
    try:
        return any(a.path.endswith(".ptz") for a in client.list_artifacts(run_id, "checkpoints"))
    except Exception:  # noqa: BLE001
        return False


def _in_session(pid: int, sid: int) -> bool:
    try:
        return os.getsid(pid) == sid
    except OSError:
        return False


def _wait_exit(proc: subprocess.Popen, timeout: float) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        pass  # round() ends it and the check counts what it left


def orphans(marker: str, sessions: set[int], grace_s: float = 20.0) -> list[str]:
    """Processes of the victims still alive after ``grace_s``: in their sessions or carrying
    their environment marker (a process that called setsid still inherits the marker).
    They are ended once counted, so one round's leftovers cannot spoil the next."""
    import psutil

    deadline = time.time() + grace_s
    while True:
        alive = []
        for proc in psutil.process_iter():
            try:
                if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                    continue
                if os.getsid(proc.pid) in sessions or proc.environ().get(MARKER) == marker:
                    alive.append(proc)
            except (psutil.Error, OSError):
                continue
        if not alive or time.time() > deadline:
            break
        time.sleep(0.5)
    found = []
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            found.append(f"pid {proc.pid}: {' '.join(proc.cmdline())[:160]}")
            proc.kill()
    return found
