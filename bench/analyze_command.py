"""`labrun analyze` end to end at a study's size: the command, not only the core.

Builds a SQLite store of N FINISHED runs (4 methods x N/20 cells x 5 seeds, 10 metrics, 20
params; ``analysis.synthetic``), then times ``labrun analyze -e syn -m metric.m00.val`` as a
user runs it (a fresh process, the analysis run logged, artifacts written) and prints the wall
time and the size of what it logged. With ``--server`` the same command goes through a plain
``mlflow server`` on that store (127.0.0.1, stopped by PID): the HTTP path a group's members
use. Prints; asserts nothing. Usage::

    python bench/analyze_command.py              # 10,000 runs, SQLite
    python bench/analyze_command.py --server     # also through mlflow server
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _analyze(uri: str, out: Path, cwd: Path) -> float:
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, PYTHONPATH=str(ROOT), LABRUN_PROGRESS="0")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "labrun", "analyze", "-e", "syn", "-m", "metric.m00.val",
                           "--out", str(out)], cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"analyze failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall


def _size(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    stats = folder / "stats.json"
    return sum(p.stat().st_size for p in files), stats.stat().st_size if stats.exists() else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10_000)
    p.add_argument("--server", action="store_true", help="also time it through mlflow server")
    args = p.parse_args(argv)
    from analysis import synthetic

    with tempfile.TemporaryDirectory(prefix="labrun-bench-analyze-") as tmp:
        root = Path(tmp)
        uri = synthetic.sqlite_store(root / "mlflow.db", root / "tpl")
        t0 = time.perf_counter()
        synthetic.build_store(uri, "syn", args.runs)
        print(f"store: {args.runs} runs built in {time.perf_counter() - t0:.1f} s; load {os.getloadavg()[0]:.2f}")
        wall = _analyze(uri, root / "out-sqlite", root)
        total, stats = _size(root / "out-sqlite")
        print(f"labrun analyze on SQLite: {wall:.1f} s wall (fresh process); artifacts {total / 1e6:.2f} MB, "
              f"stats.json {stats / 1e3:.1f} kB; load {os.getloadavg()[0]:.2f}")
        if args.server:
            from bench._common import start_server, stop_server

            proc, url = start_server(root, root / "mlflow.db")
            try:
                wall = _analyze(url, root / "out-http", root)
                print(f"labrun analyze through mlflow server ({url}): {wall:.1f} s wall; load {os.getloadavg()[0]:.2f}")
            finally:
                stop_server(proc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
