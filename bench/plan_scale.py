"""How long ``labrun sweep SPEC --dry-run`` takes for 1, 10,000, 100,000 and 1,000,000 cells.

Each size is a toy spec (``train.lr x train.steps x model.hidden x train.eval_every x data.noise x seeds``)
run as a real ``labrun sweep --dry-run`` process into /dev/null against a fresh SQLite store,
so the figure is what a user waits for: imports, the store's one query, planning, printing.
The 1-cell run is the fixed cost (Python, MLflow, the task's schema); the rest grows with
the cells. Peak memory is the child's max RSS, to show that a dry run keeps no rows.

    python bench/plan_scale.py                 # 1, 10k, 100k, 1M cells
    python bench/plan_scale.py --sizes 100000  # just one size
    python bench/plan_scale.py --format csv    # the csv writer instead of the table
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def spec_text(cells: int) -> str:
    """A toy spec of exactly ``cells`` cells (a power of ten up to 10**6, or 1)."""
    axes = ["train.lr", "train.steps", "model.hidden", "train.eval_every", "data.noise", "seed"]
    values = {"train.lr": [round(0.001 * (i + 1), 4) for i in range(10)],
              "train.steps": [10 * (i + 1) for i in range(10)],
              "model.hidden": [8 * (i + 1) for i in range(10)],
              "train.eval_every": [i + 1 for i in range(10)],
              "data.noise": [round(0.05 * i, 2) for i in range(10)],
              "seed": list(range(10))}
    digits = len(str(cells)) - 1
    if 10 ** digits != cells or digits > len(axes):
        raise SystemExit(f"--sizes: {cells} is not 1 or a power of ten up to 1000000")
    used = axes[:digits]
    lines = ["entry: toy", f"name: plan{cells}", "config: quick", "matrix:"]
    lines += [f"  {k}: {values[k]}" for k in used if k != "seed"]
    if "seed" in used:
        lines.append(f"seeds: {values['seed']}")
    if not any(k != "seed" for k in used):
        lines.remove("matrix:")
    return "\n".join(lines) + "\n"


def measure(cells: int, fmt: str, folder: Path) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, peak RSS in MB) of one dry-run process."""
    spec = folder / f"plan{cells}.yaml"
    spec.write_text(spec_text(cells))
    env = dict(os.environ, PYTHONPATH=str(REPO), MLFLOW_TRACKING_URI=f"sqlite:///{folder}/mlflow.db",
               MLFLOW_DISABLE_TELEMETRY="true", LABRUN_PROGRESS="0")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    args = [sys.executable, "-m", "labrun", "sweep", str(spec), "--dry-run"]
    if fmt != "table":
        args += ["--format", fmt]
    proc = subprocess.run(args, env=env, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{cells} cells: exit {proc.returncode}\n{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, after.ru_maxrss // 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 10_000, 100_000, 1_000_000])
    parser.add_argument("--format", default="table", choices=("table", "csv", "json"))
    args = parser.parse_args(argv)
    print(f"labrun sweep SPEC --dry-run --format {args.format} > /dev/null (toy task, fresh SQLite store); "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("| cells | wall s | CPU s | planning CPU s | peak RSS MB |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="labrun-plan-scale-") as tmp:
        measure(1, args.format, Path(tmp))  # creates the store (MLflow's migrations): not measured
        base_wall, base_cpu, _ = measure(1, args.format, Path(tmp))
        print(f"| 1 (fixed cost: Python, MLflow, the store) | {base_wall:.2f} | {base_cpu:.2f} | - | - |")
        for cells in [c for c in args.sizes if c != 1]:
            wall, cpu, rss = measure(cells, args.format, Path(tmp))
            print(f"| {cells:,} | {wall:.2f} | {cpu:.2f} | {max(0.0, cpu - base_cpu):.2f} | {rss} |", flush=True)
    print("(planning CPU = the run's CPU minus the 1-cell run's; peak RSS is the largest child so far)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
