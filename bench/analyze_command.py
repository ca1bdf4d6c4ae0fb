"""`labrun analyze` end to end at a study's size: the command, not only the core.

Builds a SQLite store of N FINISHED runs (4 methods x N/20 cells x 5 seeds, 10 metrics, 20
params; ``analysis.synthetic``), then times ``labrun analyze -e syn -m metric.m00.val`` as a
user runs it (a fresh process, the analysis run logged, artifacts written) and prints the wall
time and the size of what it logged. With ``--server`` the same command goes through a plain
``mlflow server`` on that store (127.0.0.1, stopped by PID): the HTTP path a group's members
use. With ``--labrun-server`` the same runs are written into a throw-away PostgreSQL database
(127.0.0.1:5432, dropped afterwards) and the command goes through ``labrun server`` with logins
on it, as a non-admin user with the default READ permission: the bulk endpoint's path. Prints;
asserts nothing. Usage::

    python bench/analyze_command.py                   # 10,000 runs, SQLite
    python bench/analyze_command.py --server          # also through a plain mlflow server
    python bench/analyze_command.py --labrun-server   # also through labrun server (PostgreSQL)
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


def _analyze(uri: str, out: Path, cwd: Path, login: tuple[str, str] | None = None) -> float:
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, PYTHONPATH=str(ROOT), LABRUN_PROGRESS="0")
    if login:
        env.update(MLFLOW_TRACKING_USERNAME=login[0], MLFLOW_TRACKING_PASSWORD=login[1])
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
    p.add_argument("--labrun-server", action="store_true",
                   help="also time it through labrun server with logins (PostgreSQL on 127.0.0.1:5432)")
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
        if args.labrun_server:
            _through_labrun_server(root, args.runs)
    return 0


def _through_labrun_server(root: Path, runs: int) -> None:
    """The store rebuilt in a fresh PostgreSQL database, served by ``labrun server`` (auth on)."""
    import secrets

    import psycopg2

    from analysis import synthetic

    db = f"labrun_bench_{secrets.token_hex(4)}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres", connect_timeout=5)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {db}")
    uri = f"postgresql+psycopg2://postgres@127.0.0.1:5432/{db}"
    try:
        t0 = time.perf_counter()
        synthetic.build_store(uri, "syn", runs)
        print(f"PostgreSQL store: {runs} runs built in {time.perf_counter() - t0:.1f} s")
        proc, url, password = _start_labrun_server(root, uri)
        try:
            from tracking.server import create_user

            login = ("reader", "reader-" + secrets.token_hex(8))
            create_user(url, *login, admin=("admin", password))
            for when in ("first after the server started", "again"):   # cold workers, then warm
                wall = _analyze(url, root / f"out-labrun-{when[:5]}", root, login)
                print(f"labrun analyze through labrun server ({url}, logins on, user with READ), {when}: "
                      f"{wall:.1f} s wall; load {open('/proc/loadavg').read().strip()}")
        finally:
            from bench._common import stop_server

            stop_server(proc)
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        admin.close()


def _start_labrun_server(root: Path, uri: str):
    """``labrun server`` in its own process group (stopped by its PID's group), once it answers."""
    import secrets
    import urllib.request

    from bench._common import _free_port, stop_server

    password, port = "admin-" + secrets.token_hex(12), _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), LABRUN_ADMIN_PASSWORD=password, LABRUN_PROGRESS="0")
    log = open(root / "labrun-server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "labrun", "server", "--backend-store-uri", uri, "--port", str(port),
                             "--artifacts-destination", str(root / "served")], cwd=root, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            return proc, url, password
        except Exception:
            if proc.poll() is not None:
                break
            time.sleep(1)
    stop_server(proc)
    raise SystemExit(f"labrun server did not come up:\n{(root / 'labrun-server.log').read_text()[-2000:]}")


if __name__ == "__main__":
    raise SystemExit(main())
