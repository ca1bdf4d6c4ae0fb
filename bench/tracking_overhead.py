"""What tracking costs a training loop, and how fast metrics reach the store.

1. A loop of ``--steps`` steps with ``--step-ms`` of CPU work each: no tracking, naive
   ``mlflow.log_metric`` per value, labrun's ``MetricLogger`` (incl. the final flush).
2. The training thread's own cost per metric: ``MetricLogger.log`` timed alone while the
   background flusher writes into SQLite (target <= 3 us), over ``--steps`` and over
   ``--thread-steps`` steps (short and long runs), with the count of calls over 1 ms.
3. Sustained throughput into SQLite: ``--rows`` values logged as fast as possible until
   all are stored (target >= 100k metrics/s), beside its limit, a raw ``sqlite3``
   ``executemany`` of the same rows straight into MLflow's ``metrics`` table (3 B-tree
   indexes), with no conversion, no ``latest_metrics`` and no SQLAlchemy.
4. SIGKILL in the middle of a flush: a real subprocess logs and flushes, is killed while a
   bulk write is running, then ``tracking.metrics.recover`` replays its journal; every
   value whose ``log`` call returned is counted in the store (target: 0 lost).

Each timed figure is repeated ``--repeats`` times (best and median) and printed with the
load average: the machine is shared, so the median is what a loaded machine gives.

    python bench/tracking_overhead.py [--steps 300] [--metrics 20] [--step-ms 10] [--rows 200000]
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def busy(ms: float) -> None:
    """CPU work standing in for a training step (sleep would hide contention for the GIL)."""
    end = time.perf_counter() + ms / 1000
    x = 0
    while time.perf_counter() < end:
        x += 1


def _stats(xs: list[float]) -> tuple[float, float]:
    return min(xs), statistics.median(xs)


def loop_overhead(args, client, exp, uri, names) -> None:
    import mlflow

    from tracking.metrics import MetricLogger

    def loop(steps: int, log) -> float:
        t0 = time.perf_counter()
        for step in range(steps):
            busy(args.step_ms)
            log({n: step * 0.1 + i for i, n in enumerate(names)}, step)
        return time.perf_counter() - t0

    base = loop(args.steps, lambda m, s: None)
    run = client.create_run(exp)
    with mlflow.start_run(run_id=run.info.run_id):
        naive = loop(args.naive_steps, lambda m, s: [mlflow.log_metric(k, v, step=s) for k, v in m.items()])
    run = client.create_run(exp)
    logger = MetricLogger(client, run.info.run_id, fast_uri=uri)
    t0 = time.perf_counter()
    loop(args.steps, logger.log)
    logger.close()
    ours_total = time.perf_counter() - t0
    stored = len(client.get_metric_history(run.info.run_id, names[0]))
    assert stored == args.steps, f"lost metrics: {stored} of {args.steps}"
    per_base, n = base / args.steps, args.metrics
    naive_us = (naive / args.naive_steps - per_base) / n * 1e6
    ours_us = (ours_total / args.steps - per_base) / n * 1e6
    print(f"1. loop: {args.steps} steps x {n} metrics, {args.step_ms:.0f} ms of work per step")
    print(f"   {'mode':<28}{'per metric (us)':>16}{'overhead vs none':>18}")
    print(f"   {'no tracking':<28}{0:>16.1f}{0:>17.1f}%")
    print(f"   {'naive mlflow.log_metric':<28}{naive_us:>16.1f}{(naive / args.naive_steps / per_base - 1) * 100:>17.1f}%")
    print(f"   {'labrun MetricLogger':<28}{ours_us:>16.1f}{(ours_total / base - 1) * 100:>17.1f}%  (incl. final flush)")


def training_thread_cost(args, client, exp, uri, names) -> None:
    """Two horizons: ``--steps`` (a short run: the logger's first call and one forced flush
    overlap are a large share of it) and ``--thread-steps`` (a long run, where they amortise
    and what remains is the steady cost plus the GIL waits of every flush)."""
    for steps in dict.fromkeys((args.steps, args.thread_steps)):
        wall, cpu, slow = [], [], []
        for _ in range(args.repeats):
            w, c, n = _thread_run(client, exp, uri, names, steps)
            wall.append(w / (steps * args.metrics) * 1e6)
            cpu.append(c / (steps * args.metrics) * 1e6)
            slow.append(n)
        print(f"2. training thread, MetricLogger.log alone, flusher writing meanwhile ({args.repeats} x "
              f"{steps} steps x {args.metrics} metrics, 1 ms of work between steps, load "
              f"{os.getloadavg()[0]:.1f}): wall best {min(wall):.2f} us, median {statistics.median(wall):.2f} us "
              f"per metric (target <= 3 us); the thread's own CPU (time.thread_time) median "
              f"{statistics.median(cpu):.2f} us; calls over 1 ms per run: {', '.join(map(str, slow))}")


def _thread_run(client, exp, uri, names, steps: int) -> tuple[float, float, int]:
    from tracking.metrics import MetricLogger

    logger = MetricLogger(client, client.create_run(exp).info.run_id, fast_uri=uri, flush_every_s=0.5)
    took = spent = 0.0
    slow = 0
    for step in range(steps):
        values = {n: step * 0.1 + i for i, n in enumerate(names)}
        t0, c0 = time.perf_counter(), time.thread_time()
        logger.log(values, step)
        dt = time.perf_counter() - t0
        took += dt
        slow += dt > 1e-3
        spent += time.thread_time() - c0
        busy(1)  # let the flusher run between steps, as training would
    logger.close()
    return took, spent, slow


def _raw_insert(db: str, run_id: str, rows: list) -> float:
    """The limit: sqlite3 executemany straight into MLflow's metrics table, one transaction."""
    con = sqlite3.connect(db, timeout=30)
    t0 = time.perf_counter()
    with con:
        con.executemany("INSERT OR IGNORE INTO metrics (key, value, timestamp, run_uuid, step, is_nan) "
                        "VALUES (?, ?, ?, ?, ?, 0)", [(k, v, ts, run_id, s) for k, v, ts, s in rows])
    took = time.perf_counter() - t0
    con.close()
    return took


def throughput(args, client, exp, uri, db, names) -> None:
    """labrun and the raw insert alternate, each on a fresh run of the same store, so each pair
    sees the same database size and nearly the same load; timestamps are the wall clock, as in
    training (a fixed 1000 + step for every run would interleave each run's rows with the
    previous runs' in the primary key, which no real run does)."""
    from tracking.metrics import MetricLogger

    steps = args.rows // args.metrics
    ours, raw, ratio, cpu, loads = [], [], [], [], []
    for r in range(args.repeats):
        run_id = client.create_run(exp).info.run_id
        logger = MetricLogger(client, run_id, fast_uri=uri, flush_every_s=0.2)
        t0, c0 = time.perf_counter(), time.process_time()
        for step in range(steps):
            logger.log({n: step * 0.5 + i for i, n in enumerate(names)}, step)
        logger.close()
        took, spent = time.perf_counter() - t0, time.process_time() - c0
        ours.append(steps * args.metrics / took)
        cpu.append(spent / (steps * args.metrics) * 1e6)
        now = int(time.time() * 1000)
        rows = [(n, step * 0.5 + i, now + step // 50, step) for step in range(steps) for i, n in enumerate(names)]
        raw.append(len(rows) / _raw_insert(db, client.create_run(exp).info.run_id, rows))
        ratio.append(ours[-1] / raw[-1])
        loads.append(os.getloadavg()[0])
    med = statistics.median
    print(f"3. sustained into SQLite, {steps * args.metrics} metrics per repeat, {args.repeats} pairs, "
          f"load {min(loads):.1f}-{max(loads):.1f}:")
    print(f"   labrun log -> stored   best {max(ours) / 1e3:7.1f}k/s  median {med(ours) / 1e3:7.1f}k/s"
          f"  (target >= 100k/s); process CPU {med(cpu):.1f} us per metric (both threads)")
    print(f"   raw sqlite3 insert     best {max(raw) / 1e3:7.1f}k/s  median {med(raw) / 1e3:7.1f}k/s"
          f"  (the limit: one executemany, no conversion, no latest_metrics)")
    print(f"   labrun / raw, pair by pair: median {med(ratio):.2f}, range {min(ratio):.2f}-{max(ratio):.2f}")


CHILD = textwrap.dedent("""
    import mmap, os, sys, time
    from tracking.metrics import MetricLogger
    uri, run_id, counter_path = sys.argv[1:4]
    fd = os.open(counter_path, os.O_RDWR)
    shared = mmap.mmap(fd, 16)
    class Logger(MetricLogger):
        def _write(self, rows):          # marks "a bulk write is running" for the parent
            shared[8] = 1
            try:
                super()._write(rows)
            finally:
                shared[8] = 0
    logger = Logger(None, run_id, fast_uri=uri, flush_every_s=0.05)
    names = [f"loss.part{i}" for i in range(20)]
    step = 0
    while True:
        logger.log({n: step + i * 0.01 for i, n in enumerate(names)}, step, timestamp_ms=1000 + step)
        step += 1
        shared[0:8] = step.to_bytes(8, "little")   # calls that returned
""")


def sigkill_mid_flush(args, client, exp, uri, db, tmp: Path) -> None:
    from tracking.metrics import recover

    run_id = client.create_run(exp).info.run_id
    counter = tmp / "counter"
    counter.write_bytes(bytes(16))
    env = {**os.environ, "PYTHONPATH": str(REPO), "LABRUN_JOURNAL_DIR": str(tmp / "journal")}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, uri, run_id, str(counter)], env=env)
    import mmap

    with open(counter, "r+b") as fh:
        shared = mmap.mmap(fh.fileno(), 16)
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            if int.from_bytes(shared[0:8], "little") > 20_000 and shared[8] == 1:
                break
            time.sleep(0.0002)
        mid = shared[8] == 1
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        logged = int.from_bytes(shared[0:8], "little") * 20
    con = sqlite3.connect(db)
    count = lambda: con.execute("select count(*) from metrics where run_uuid = ?", (run_id,)).fetchone()[0]
    at_kill = count()
    replayed = recover(client, run_id, fast_uri=uri, root=tmp / "journal")
    after = count()
    lost = max(0, logged - after)
    print(f"4. SIGKILL {'during' if mid else 'NOT during (timed out)'} a bulk write: {logged} values logged "
          f"(log returned), {at_kill} in the store at the kill, {replayed} replayed from the journal, "
          f"{after} stored after recover: {lost} lost (target 0)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--thread-steps", type=int, default=3000, help="part 2's long horizon")
    ap.add_argument("--naive-steps", type=int, default=30, help="naive logging is slow; fewer steps")
    ap.add_argument("--metrics", type=int, default=20)
    ap.add_argument("--step-ms", type=float, default=10.0)
    ap.add_argument("--rows", type=int, default=200_000, help="values per throughput repeat")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    tmp = Path(tempfile.mkdtemp(prefix="labrun-bench-"))
    os.chdir(tmp)
    db = str(tmp / "mlflow.db")
    uri = f"sqlite:///{db}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    os.environ["LABRUN_JOURNAL_DIR"] = str(tmp / "journal")
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    mlflow.set_tracking_uri(uri)
    exp = client.create_experiment("bench")
    names = [f"loss.part{i}" for i in range(args.metrics)]
    la = os.getloadavg()
    print(f"store {uri}; load average {la[0]:.2f} / {la[1]:.2f} / {la[2]:.2f} (1/5/15 min), "
          f"{os.cpu_count()} CPUs; {args.repeats} repeats where marked")
    try:
        loop_overhead(args, client, exp, uri, names)
        training_thread_cost(args, client, exp, uri, names)
        throughput(args, client, exp, uri, db, names)
        sigkill_mid_flush(args, client, exp, uri, db, tmp)
    finally:
        os.chdir(REPO)
        shutil.rmtree(tmp, ignore_errors=True)
    la = os.getloadavg()
    print(f"load average at the end {la[0]:.2f} / {la[1]:.2f} / {la[2]:.2f}")


if __name__ == "__main__":
    main()
