"""Metric names and the batching logger (SQL fast path and MLflow's log_batch agree)."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest

from tests.helpers import PYTHON, REPO
from tracking import backends
from tracking.metrics import MetricLogger, default_direction, validate_name


pytestmark = pytest.mark.usefixtures("fast_paths_on")


@pytest.mark.parametrize("name", ["loss.kl.z", "metric.accuracy.val", "diag.grad_norm_clipped",
                                  "dynamics.layer0.cka", "perf.samples_per_s"])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize("name", ["loss", "Loss.total", "kl.z", "loss..z", "loss.kl z", "metric."])
def test_invalid_names_say_what_is_valid(name):
    with pytest.raises(ValueError, match=r"use lowercase dotted names under one of loss, metric"):
        validate_name(name)


def test_directions_by_name():
    assert default_direction("metric.accuracy.val") == "max"
    assert default_direction("metric.mse.val") == "min"
    assert default_direction("loss.total") == "min"


ROWS = [({"loss.a": 1.0, "loss.b": float("nan")}, 0), ({"loss.a": 0.5, "loss.b": 2.0}, 1),
        ({"loss.a": float("inf"), "loss.b": -float("inf")}, 2), ({"loss.a": 0.25}, 1),
        ({"loss.a": 0.1}, 3)]


def _log_all(client, run_id, fast_uri, *, fast=None):
    logger = MetricLogger(client, run_id, flush_every_s=0, fast_uri=fast_uri)
    assert (logger._writer is not None) == (bool(fast_uri) if fast is None else fast)
    for i, (metrics, step) in enumerate(ROWS):
        logger.log(metrics, step, timestamp_ms=1000 + i)
    logger.log({"loss.a": 0.1}, 3, timestamp_ms=1004)  # exact duplicate: ignored, not an error
    logger.close()
    return logger


def _read(client, run_id):
    run = client.get_run(run_id)
    hist = {k: [(m.step, m.timestamp, "nan" if math.isnan(m.value) else m.value) for m in
                sorted(client.get_metric_history(run_id, k), key=lambda m: (m.step, m.timestamp))]
            for k in ("loss.a", "loss.b")}
    return run.data.metrics, hist


def test_fast_sql_path_matches_mlflow_log_batch(store):
    exp = store.create_experiment("m")
    slow = store.create_run(exp).info.run_id
    fast = store.create_run(exp).info.run_id
    logger = _log_all(store, slow, None)
    _log_all(store, fast, store.uri)
    latest_slow, hist_slow = _read(store, slow)
    latest_fast, hist_fast = _read(store, fast)
    assert hist_fast == hist_slow
    assert set(latest_fast) == set(latest_slow) == {"loss.a", "loss.b"}
    assert latest_fast["loss.a"] == latest_slow["loss.a"] == pytest.approx(0.1)
    assert latest_fast["loss.b"] == latest_slow["loss.b"] == -sys.float_info.max
    assert hist_fast["loss.b"][0][2] == "nan"
    assert hist_fast["loss.a"] == [(0, 1000, 1.0), (1, 1001, 0.5), (1, 1003, 0.25),
                                   (2, 1002, sys.float_info.max), (3, 1004, 0.1)]
    stats = logger.summary()
    assert stats["loss.a"]["best"] == pytest.approx(0.1) and stats["loss.a"]["final_step"] == 3
    assert stats["loss.b"]["count"] == 3


def test_background_flush_loses_nothing(store):
    run_id = store.create_run(store.create_experiment("bg")).info.run_id
    logger = MetricLogger(store, run_id, flush_every_s=0.01, max_buffer=50, fast_uri=store.uri)
    for step in range(2000):
        logger.log({"loss.x": step * 1.0, "loss.y": -step * 1.0}, step)
    logger.close()
    assert len(store.get_metric_history(run_id, "loss.x")) == 2000
    assert store.get_run(run_id).data.metrics["loss.y"] == -1999.0


def _fallback_lines(caplog, kind="metric_writer"):
    return [r for r in caplog.records if r.name == "labrun" and backends.FAST_PATHS[kind].what in r.getMessage()]


def test_public_api_only_writes_the_same_rows(store, monkeypatch, caplog):
    """LABRUN_PUBLIC_API_ONLY=1: log_batch, with the very rows the SQL writer stores."""
    exp = store.create_experiment("m")
    fast, public = store.create_run(exp).info.run_id, store.create_run(exp).info.run_id
    _log_all(store, fast, store.uri)
    monkeypatch.setenv("LABRUN_PUBLIC_API_ONLY", "1")
    caplog.set_level("INFO", logger="labrun")
    _log_all(store, public, store.uri, fast=False)
    MetricLogger(store, public, flush_every_s=0, fast_uri=store.uri).close()
    assert _read(store, public) == _read(store, fast)   # NaN, clamped infinities, duplicates alike
    (line,) = _fallback_lines(caplog)                    # one line, however many loggers
    assert "LABRUN_PUBLIC_API_ONLY is set" in line.getMessage()


def test_failed_bulk_write_falls_back_to_log_batch_with_one_line(store, caplog):
    exp = store.create_experiment("m")
    run_id = store.create_run(exp).info.run_id
    logger = MetricLogger(store, run_id, flush_every_s=0, fast_uri=store.uri)
    assert logger._writer is not None

    def broken(*_):
        raise RuntimeError("disk I/O error\nsecond line")

    logger._writer.write = broken
    logger.log({"loss.a": 1.0}, 0, timestamp_ms=1000)
    logger.flush()                                       # the failed batch goes through log_batch
    logger.log({"loss.a": 0.5}, 1, timestamp_ms=1001)
    logger.close()
    assert logger._writer is None
    assert [(m.step, m.value) for m in store.get_metric_history(run_id, "loss.a")] == [(0, 1.0), (1, 0.5)]
    (line,) = _fallback_lines(caplog)
    assert line.levelname == "WARNING"
    assert "a bulk write failed (RuntimeError: disk I/O error)" in line.getMessage()
    assert "MlflowClient.log_batch" in line.getMessage()


# ---------------------------------------------------------------- the training thread only appends

def _count_rows(store, run_id):
    return sum(len(store.get_metric_history(run_id, k)) for k in store.get_run(run_id).data.metrics)


def test_log_only_appends_and_a_bad_name_is_still_an_immediate_error(store, tmp_path):
    run_id = store.create_run(store.create_experiment("a")).info.run_id
    logger = MetricLogger(store, run_id, flush_every_s=0, max_buffer=10**6, fast_uri=store.uri,
                          journal=tmp_path / "j")
    for step in range(50):
        logger.log({"loss.a": step * 1.0, "metric.acc.val": 0.5}, step)
    assert _count_rows(store, run_id) == 0                   # nothing written from the caller's thread
    with pytest.raises(ValueError, match="invalid metric name 'Loss'"):
        logger.log({"loss.a": 1.0, "Loss": 2.0}, 50)
    with pytest.raises(ValueError, match="could not convert"):
        logger.log({"loss.a": "abc"}, 50)
    logger.close()
    assert _count_rows(store, run_id) == 100
    assert not (tmp_path / "j").exists()                    # all stored: the journal is gone


def test_deferred_statistics_keep_the_order_of_set_direction(store, tmp_path):
    run_id = store.create_run(store.create_experiment("d")).info.run_id
    logger = MetricLogger(store, run_id, flush_every_s=0, max_buffer=10**6, journal=False)
    logger.log({"metric.score.val": 1.0}, 0)
    logger.log({"metric.score.val": 3.0}, 1)
    logger.set_direction("metric.score.val", "min")        # resets best: later values count
    logger.log({"metric.score.val": 2.0}, 2)
    logger.log({"metric.score.val": 2.5}, 3)
    got = logger.summary()["metric.score.val"]
    assert (got["best"], got["best_step"], got["final"], got["count"]) == (2.0, 2, 2.5, 4)
    logger.close()


def test_a_journal_left_by_a_dead_process_is_recovered_once(store, tmp_path):
    from tracking.metrics import recover

    run_id = store.create_run(store.create_experiment("r")).info.run_id
    code = ("import os, sys\nfrom tracking.metrics import MetricLogger\n"
            "lg = MetricLogger(None, sys.argv[1], flush_every_s=0, max_buffer=10**9)\n"
            "for s in range(300): lg.log({'loss.a': s * 1.0, 'loss.b': -s * 1.0}, s, timestamp_ms=1000 + s)\n"
            "os._exit(9)\n")                                   # dies without flushing anything
    env = {**os.environ, "PYTHONPATH": str(REPO), "LABRUN_JOURNAL_DIR": str(tmp_path / "j")}
    assert subprocess.run([PYTHON, "-c", code, run_id], env=env).returncode == 9
    assert _count_rows(store, run_id) == 0
    assert recover(store, run_id, fast_uri=store.uri, root=tmp_path / "j") == 600
    assert recover(store, run_id, fast_uri=store.uri, root=tmp_path / "j") == 0
    hist = store.get_metric_history(run_id, "loss.a")
    assert sorted((m.step, m.value, m.timestamp) for m in hist) == [(s, s * 1.0, 1000 + s) for s in range(300)]
    assert store.get_run(run_id).data.metrics["loss.b"] == -299.0


CHILD = """
import mmap, os, sys
from tracking.metrics import MetricLogger
uri, run_id, counter = sys.argv[1:4]
fd = os.open(counter, os.O_RDWR)
shared = mmap.mmap(fd, 16)
class Marked(MetricLogger):
    def _write(self, rows):
        shared[8] = 1
        try:
            super()._write(rows)
        finally:
            shared[8] = 0
logger = Marked(None, run_id, fast_uri=uri, flush_every_s=0.02)
step = 0
while True:
    logger.log({f"loss.part{i}": step + i * 0.01 for i in range(20)}, step, timestamp_ms=1000 + step)
    step += 1
    shared[0:8] = step.to_bytes(8, "little")
"""


def test_sigkill_in_the_middle_of_a_flush_loses_nothing(store, tmp_path):
    """A real process killed while a bulk write runs: every value whose log() returned is
    in the store once its journal is recovered (counted, not sampled)."""
    import mmap
    import signal
    import time

    from tracking.metrics import recover

    run_id = store.create_run(store.create_experiment("k")).info.run_id
    counter = tmp_path / "counter"
    counter.write_bytes(bytes(16))
    env = {**os.environ, "PYTHONPATH": str(REPO), "LABRUN_JOURNAL_DIR": str(tmp_path / "j")}
    proc = subprocess.Popen([PYTHON, "-c", CHILD, store.uri, run_id, str(counter)], env=env)
    with open(counter, "r+b") as fh:
        shared = mmap.mmap(fh.fileno(), 16)
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            if int.from_bytes(shared[0:8], "little") > 2000 and shared[8] == 1:
                break
            time.sleep(0.0002)
        assert shared[8] == 1, "never caught the child in the middle of a bulk write"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        logged_steps = int.from_bytes(shared[0:8], "little")
    stored_at_kill = _count_rows(store, run_id)
    assert stored_at_kill < logged_steps * 20                # the kill did cut a flush short
    recover(store, run_id, fast_uri=store.uri, root=tmp_path / "j")
    steps = {m.step for m in store.get_metric_history(run_id, "loss.part19")}
    assert set(range(logged_steps)) <= steps                 # zero lost
    assert _count_rows(store, run_id) >= logged_steps * 20


def test_no_room_for_the_journal_is_one_warning_and_logging_goes_on(store, tmp_path, caplog):
    run_id = store.create_run(store.create_experiment("n")).info.run_id
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    logger = MetricLogger(store, run_id, flush_every_s=0, fast_uri=store.uri, journal=blocker / "j")
    logger.log({"loss.a": 1.0}, 0)
    logger.close()
    assert [m.value for m in store.get_metric_history(run_id, "loss.a")] == [1.0]
    assert any("metric journal off" in r.getMessage() for r in caplog.records)
