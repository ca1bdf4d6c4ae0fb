"""Fault injection, many rounds: SIGKILL runs, sweeps and optimize workers, rerun, count damage.

    python bench/chaos.py --rounds 50 --seed 0            # all scenarios, in turn
    python bench/chaos.py --rounds 10 --scenarios sweep_group,optimize
    python bench/chaos.py --replay sweep_cell:30007       # one round again, by its printed seed
    python bench/chaos.py --rounds 50 --jobs 2            # two worker processes share the rounds

Each round (tests/chaos/harness.py) kills its victim at a moment drawn from the round's seed,
reruns the same command to completion and counts, in the store: cells lost (never FINISHED),
cells duplicated (FINISHED more than once, runs tagged labrun.withdrawn excepted), runs left
RUNNING (and Optuna trials left RUNNING), orphans (the victims' processes alive 20 s after
the rerun) and finished runs whose metric series differs from an uninterrupted run of the
same config. Prints one line per round (with its seed), then a table; asserts nothing.
Everything runs in a throw-away SQLite store in a temp dir (one per worker).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
for k, v in {"MLFLOW_DISABLE_TELEMETRY": "true", "WANDB_MODE": "disabled", "LABRUN_PROGRESS": "0",
             "GIT_PYTHON_REFRESH": "quiet"}.items():
    os.environ.setdefault(k, v)

COLUMNS = ("rounds", "killed", "lost", "duplicated", "stuck", "orphans", "mismatched", "withdrawn", "rerun_fail")


def cpu_seconds() -> float:
    """User + system CPU of this process and of every child it has reaped."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def work(rounds: list[tuple[int, str, int]], root: Path, out: Path) -> None:
    """Run these rounds against one fresh store in ``root``; one JSON line per round in ``out``."""
    root.mkdir(parents=True, exist_ok=True)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root}/mlflow.db"
    for var in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "LABRUN_PARENT_RUN_ID"):
        os.environ.pop(var, None)
    os.chdir(root)  # MLflow's default artifact root (./mlruns) resolves against the cwd
    from tests.chaos.harness import Chaos

    chaos = Chaos(root, log=lambda line: print(line, flush=True))
    chaos.client.search_experiments()  # create the tables before any victim races to
    with open(out, "a") as fh:
        for index, scenario, seed in rounds:
            result = chaos.round(index, scenario, seed)
            fh.write(json.dumps(asdict(result)) + "\n")
            fh.flush()
        fh.write(json.dumps({"cpu_s": cpu_seconds()}) + "\n")


def summarize(lines: list[dict]) -> str:
    rows: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COLUMNS, 0))
    for r in lines:
        for key in (r["scenario"], "all"):
            row = rows[key]
            row["rounds"] += 1
            row["killed"] += not r["killed"].startswith("nothing")
            row["rerun_fail"] += r["rerun_code"] not in (None, 0)
            for c in ("lost", "duplicated", "stuck", "orphans", "mismatched", "withdrawn"):
                row[c] += r[c]
    head = "| scenario | " + " | ".join(COLUMNS) + " |"
    out = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name in sorted(rows, key=lambda n: (n == "all", n)):
        out.append(f"| {name} | " + " | ".join(str(rows[name][c]) for c in COLUMNS) + " |")
    return "\n".join(out)


def plan(args: argparse.Namespace) -> list[tuple[int, str, int]]:
    from tests.chaos.harness import SCENARIOS, round_seed

    if args.replay:
        scenario, _, seed = args.replay.partition(":")
        return [(0, scenario, int(seed))]
    scenarios = args.scenarios.split(",") if args.scenarios else list(SCENARIOS)
    unknown = sorted(set(scenarios) - set(SCENARIOS))
    if unknown:
        print(f"chaos: error: unknown scenario(s) {', '.join(unknown)}; valid: {', '.join(SCENARIOS)}",
              file=sys.stderr)
        raise SystemExit(2)
    return [(i, scenarios[i % len(scenarios)], round_seed(args.seed, i)) for i in range(args.rounds)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--seed", type=int, default=0, help="base seed; round i uses seed*10000+i")
    p.add_argument("--scenarios", help="comma-separated subset (default: all, in turn)")
    p.add_argument("--replay", metavar="SCENARIO:SEED", help="one round, as printed by an earlier run")
    p.add_argument("--jobs", type=int, default=1, help="worker processes sharing the rounds")
    p.add_argument("--root", help="where the stores go (default: a new temp dir, kept)")
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    rounds = plan(args)
    root = Path(args.root or tempfile.mkdtemp(prefix="labrun-chaos-"))
    if args.worker is not None:
        mine = rounds[args.worker::args.jobs]
        work(mine, root / f"worker{args.worker}", root / f"worker{args.worker}.jsonl")
        return
    load0 = os.getloadavg()
    print(f"chaos: {len(rounds)} rounds, base seed {args.seed}, {args.jobs} job(s), stores in {root}; "
          f"load average {load0[0]:.1f}", flush=True)
    argv = [sys.executable, __file__, "--root", str(root), "--jobs", str(args.jobs), "--rounds",
            str(args.rounds), "--seed", str(args.seed)]
    argv += ["--scenarios", args.scenarios] if args.scenarios else []
    argv += ["--replay", args.replay] if args.replay else []
    workers = [subprocess.Popen([*argv, "--worker", str(j)]) for j in range(args.jobs)]
    codes = [w.wait() for w in workers]
    lines = []
    for j in range(args.jobs):
        path = root / f"worker{j}.jsonl"
        lines += [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []
    results = [r for r in lines if "scenario" in r]
    print("\n" + summarize(results))
    print(f"\n{len(results)}/{len(rounds)} rounds done (worker exit codes {codes}); counts taken after each "
          f"round's rerun finished and a 20 s grace for processes to exit. CPU: {cpu_seconds():.0f} s "
          f"(this process, its workers and every process they reaped; a victim's cells killed with it "
          f"are not counted); load average {load0[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end.")


if __name__ == "__main__":
    main()
