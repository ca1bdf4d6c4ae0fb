"""Checkpoints: round trip, corruption fallback, 8-bit moments, bit-identical resume."""
from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import numpy as np
import pytest
import torch

from projects.toy import train as toy
from tests.helpers import PYTHON, REPO, all_runs
from tracking import checkpoint as ckpt


def _model_and_opt():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3)
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(8, 6)).pow(2).mean().backward()
        opt.step()
        sched.step()
    return model, opt, sched


def test_round_trip_restores_objects_and_every_rng(tmp_path):
    model, opt, sched = _model_and_opt()
    gen = torch.Generator().manual_seed(7)
    npgen = np.random.default_rng(3)
    state = ckpt.collect({"model": model, "optimizer": opt, "scheduler": sched, "gen": gen,
                          "npgen": npgen}, global_step=42, epoch=3, extra={"best": 0.5})
    path = ckpt.save(state, tmp_path / ckpt.checkpoint_name(42))
    expected = (random.random(), np.random.rand(), torch.rand(3), torch.rand(2, generator=gen),
                npgen.random())

    model2, opt2, sched2 = _model_and_opt()
    for p in model2.parameters():
        p.data.zero_()
    gen2, npgen2 = torch.Generator().manual_seed(99), np.random.default_rng(99)
    loaded = ckpt.load(path)
    assert (loaded["global_step"], loaded["epoch"], loaded["extra"]) == (42, 3, {"best": 0.5})
    ckpt.apply(loaded, {"model": model2, "optimizer": opt2, "scheduler": sched2, "gen": gen2,
                        "npgen": npgen2})
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    assert sched2.state_dict() == sched.state_dict()
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert all(torch.equal(s1[k]["exp_avg_sq"], s2[k]["exp_avg_sq"]) for k in s1)
    got = (random.random(), np.random.rand(), torch.rand(3), torch.rand(2, generator=gen2),
           npgen2.random())
    assert got[0] == expected[0] and got[1] == expected[1] and got[4] == expected[4]
    assert torch.equal(got[2], expected[2]) and torch.equal(got[3], expected[3])


def test_missing_object_in_checkpoint_is_a_clear_error(tmp_path):
    model, _, _ = _model_and_opt()
    state = ckpt.collect({"model": model}, global_step=1)
    with pytest.raises(ckpt.CheckpointError, match="no state for optimizer"):
        ckpt.apply(state, {"model": model, "optimizer": torch.optim.SGD(model.parameters(), lr=1)})


def test_corrupt_and_truncated_files_fall_back_to_previous(tmp_path, caplog):
    model, opt, _ = _model_and_opt()
    for step in (10, 20, 30):
        ckpt.save(ckpt.collect({"model": model, "optimizer": opt}, global_step=step),
                  tmp_path / ckpt.checkpoint_name(step))
    newest = tmp_path / "cp_30.ptz"
    blob = bytearray(newest.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    newest.write_bytes(bytes(blob))
    middle = tmp_path / "cp_20.ptz"
    middle.write_bytes(middle.read_bytes()[:100])
    with pytest.raises(ckpt.CheckpointError, match="checksum mismatch"):
        ckpt.load(newest)
    with pytest.raises(ckpt.CheckpointError, match="truncated"):
        ckpt.load(middle)
    (tmp_path / "cp_40.ptz").write_bytes(b"not a checkpoint at all, just text")
    with caplog.at_level("WARNING"):
        path, state = ckpt.latest_valid(tmp_path)
    assert path.name == "cp_10.ptz" and state["global_step"] == 10
    assert sum("skipping unusable checkpoint" in r.message for r in caplog.records) == 3


def test_quantized_moments_are_smaller_and_close(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(512, 512)
    opt = torch.optim.Adam(model.parameters())
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(32, 512)).pow(2).mean().backward()
        opt.step()
    full = ckpt.save(ckpt.collect({"optimizer": opt}, global_step=1), tmp_path / "a" / "cp_1.ptz")
    small = ckpt.save(ckpt.collect({"optimizer": opt}, global_step=1, quantize_moments=True),
                      tmp_path / "b" / "cp_1.ptz")
    assert small.stat().st_size < 0.45 * full.stat().st_size
    opt2 = torch.optim.Adam(torch.nn.Linear(512, 512).parameters())
    ckpt.apply(ckpt.load(small), {"optimizer": opt2})
    for key in ("exp_avg", "exp_avg_sq"):
        a = opt.state_dict()["state"][0][key]
        b = opt2.state_dict()["state"][0][key]
        rel = (a - b).norm() / a.norm()
        assert rel < 0.02, (key, float(rel))
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]


def _series(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key),
                                              key=lambda m: m.step)]


def test_resume_after_sigkill_equals_uninterrupted_run(store, tmp_path):
    base = ["--config", "quick", "--set", "train.steps=60", "--set", "checkpoint.every=20"]
    toy.main(base + ["--name", "straight"])
    straight = all_runs(store)[0].info.run_id

    env = {**os.environ, "MLFLOW_TRACKING_URI": store.uri, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([PYTHON, "-m", "projects.toy.train", *base, "--set", "train.sleep_s=0.1",
                             "--name", "victim"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    victim = None
    deadline = time.time() + 180
    while time.time() < deadline:
        runs = [r for r in all_runs(store) if r.info.run_name == "victim"]
        if runs and any(a.path.endswith("cp_40.ptz")
                        for a in store.list_artifacts(runs[0].info.run_id, "checkpoints")):
            victim = runs[0].info.run_id
            break
        time.sleep(0.2)
    assert victim, "the victim run never reached its step-40 checkpoint"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert store.get_run(victim).info.status == "RUNNING"  # SIGKILL: nobody could mark it

    # Sleeping changes no number; drop it so the continued run is quick.
    toy.main(["--resume", victim, "--set", "train.sleep_s=0", "--name", "continued"])
    cont = [r for r in all_runs(store) if r.info.run_name == "continued"][0]
    assert cont.data.tags["labrun.resumed_from"] == victim
    assert int(cont.data.tags["labrun.resumed_step"]) in (40, 60)
    for key in ("loss.total", "metric.mse.val", "diag.lr"):
        assert _series(store, cont.info.run_id, key) == _series(store, straight, key), key


def test_a_folder_of_format_1_and_format_2_files_resumes_from_the_newest_valid(tmp_path):
    """Runs checkpointed before format 2 keep resuming: v1 and v2 files sit side by side."""
    import hashlib
    import io
    import struct

    import zstandard

    model, opt, _ = _model_and_opt()
    old = ckpt.collect({"model": model, "optimizer": opt}, global_step=10)
    raw = io.BytesIO()
    torch.save(old, raw)
    payload = zstandard.ZstdCompressor(level=1).compress(raw.getvalue())
    (tmp_path / "cp_10.ptz").write_bytes(struct.pack("<8sIQ32s", b"LABRUNCK", 1, len(payload),
                                                     hashlib.blake2b(payload, digest_size=32).digest()) + payload)
    ckpt.save(ckpt.collect({"model": model, "optimizer": opt}, global_step=20), tmp_path / "cp_20.ptz")
    path, state = ckpt.latest_valid(tmp_path)
    assert path.name == "cp_20.ptz" and ckpt.file_options(path)["version"] == 2
    (tmp_path / "cp_20.ptz").write_bytes((tmp_path / "cp_20.ptz").read_bytes()[:-3])
    path, state = ckpt.latest_valid(tmp_path)
    assert path.name == "cp_10.ptz" and state["global_step"] == 10
    model2, opt2, _ = _model_and_opt()
    ckpt.apply(state, {"model": model2, "optimizer": opt2})
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))


def test_8bit_moments_keep_optimizer_wide_scalars():
    """SPAM-style optimizers keep plain step counters beside the per-parameter dicts."""
    import torch

    from tracking.checkpoint import dequantize_optimizer_state, quantize_optimizer_state

    state = {"param_groups": [{"lr": 0.1}],
             "state": {0: {"exp_avg": torch.randn(5000), "exp_avg_sq": torch.rand(5000), "step": torch.tensor(3.0)},
                       "total_step": 7, "current_step": 2}}
    back = dequantize_optimizer_state(quantize_optimizer_state(state))
    assert back["state"]["total_step"] == 7 and back["state"]["current_step"] == 2
    assert torch.allclose(back["state"][0]["exp_avg"], state["state"][0]["exp_avg"], atol=0.05)
