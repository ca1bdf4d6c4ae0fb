"""The dynamics entry point on a real SQLite store: what a run records, resume after a
SIGKILL (the same future bit for bit on CPU), and the spiky config's spikes."""
from __future__ import annotations

import json

import pytest

from tests.helpers import PYTHON, REPO, all_runs, run_cli, sigkill_after_checkpoint

TINY = ["--config", "spiky", "--set", "data.context=16", "--set", "data.max_chars=60000",
        "--set", "model.layers=1", "--set", "model.d_model=16", "--set", "model.heads=2",
        "--set", "train.batch_size=8", "--set", "train.steps=60", "--set", "train.eval_every=20",
        "--set", "train.eval_batches=1", "--set", "checkpoint.every=20",
        "--set", "monitor.window=15", "--set", "monitor.warmup=5", "--set", "events.warmup=10",
        "--set", "events.window=15", "--set", "instability.lr_spikes=[25,45]",
        "--set", "instability.noisy_steps=[35]", "--set", "instability.noise_prob=0.05"]


def _series(client, run_id):
    run = client.get_run(run_id)
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k))
            for k in run.data.metrics if not k.startswith("perf.")}


def test_a_run_records_the_timeline_costs_and_components(store):
    from projects.dynamics.train import main

    main(TINY + ["--set", "train.stabiliser=zclip"])
    (run,) = all_runs(store)
    assert run.info.status == "FINISHED" and run.data.tags["labrun.method"] == "zclip"
    m = run.data.metrics
    assert {"loss.train", "loss.val", "metric.perplexity.val", "dynamics.index", "dynamics.volatility",
            "dynamics.entropy", "dynamics.disagreement", "dynamics.trigger", "dynamics.trigger_loss",
            "dynamics.event", "dynamics.events.per_100k", "dynamics.events.wasted_share",
            "diag.act.layer0.entropy", "perf.monitor_ms"} <= set(m)
    assert len(store.get_metric_history(run.info.run_id, "dynamics.index")) == 60
    path = store.download_artifacts(run.info.run_id, "summary.json", str(store.root / "dl"))
    summary = json.load(open(path))
    comps = summary["components"]
    assert comps["monitor"]["status"] == "success" and comps["figures.timeline"]["status"] == "success"
    assert "figures/timeline.png" in comps["figures.timeline"]["figures"]
    res = summary["results"]
    assert res["events"] == len(res["event_steps"]) and 0 <= res["wasted_flops_share"] <= 1
    arts = {a.path for a in store.list_artifacts(run.info.run_id, "checkpoints")}
    assert "checkpoints/cp_60.ptz" in arts


def test_monitor_off_is_reported_disabled_with_how_to_enable(store):
    from projects.dynamics.train import main

    main(TINY + ["--set", "monitor.enabled=false", "--set", "train.steps=20"])
    (run,) = all_runs(store)
    assert "dynamics.index" not in run.data.metrics
    path = store.download_artifacts(run.info.run_id, "summary.json", str(store.root / "dl"))
    mon = json.load(open(path))["components"]["monitor"]
    assert mon["status"] == "disabled" and mon["enable"] == "--set monitor.enabled=true"


@pytest.mark.slow
def test_resume_of_a_spiky_run_after_sigkill_reproduces_the_same_future(store):
    from projects.dynamics.train import main

    victim_id, reference_id = sigkill_after_checkpoint(
        store, "projects.dynamics.train", [*TINY, "--set", "train.sleep_s=0.15"], "cp_20.ptz",
        reference=lambda: main(TINY))
    assert store.get_run(victim_id).info.status == "KILLED"  # the resume closed the SIGKILLed source
    main(["--resume", victim_id, "--set", "train.sleep_s=0"])
    (resumed,) = [r for r in all_runs(store) if r.data.tags.get("labrun.resumed_from") == victim_id]
    assert int(resumed.data.tags["labrun.resumed_step"]) in (20, 40)
    want, got = _series(store, reference_id), _series(store, resumed.info.run_id)
    assert set(want) == set(got)
    for key in want:
        assert got[key] == want[key], key
    assert sum(v for _, v in want["dynamics.event"]) >= 1     # the future held a spike


def test_bad_source_exits_2_before_any_run_exists(store):
    proc = run_cli([PYTHON, "-m", "projects.dynamics.train", "--set", "data.source=/nope.txt"], cwd=store.root)
    assert proc.returncode == 2 and "no such file or folder" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert all_runs(store) == []


@pytest.mark.slow
@pytest.mark.timeout(1800)   # ~20 CPU s; a loaded machine stretches the wall time a lot
def test_spiky_config_produces_several_loss_spikes():
    import torch

    from tracking.config import resolve_config
    from projects.dynamics.config import Config
    from projects.dynamics.trainer import Trainer

    torch.set_num_threads(1)   # two threads on a shared 2-core box mostly spin
    cfg = resolve_config(Config, "spiky", ["monitor.enabled=false", "train.steps=600"])  # 5 of 6 shocks
    t = Trainer(cfg)
    for _ in range(cfg.train.steps):
        t.step()
    assert len(t.events.events) >= 3, [e.start for e in t.events.events]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_mlflow_run_entry_point(store):
    env = {"MLFLOW_TRACKING_URI": store.uri, "LABRUN_PROGRESS": "0"}
    params = [p for kv in TINY[3::2] for p in ("-P", kv)]   # every `--set k=v` as `-P k=v`
    proc = run_cli([str(REPO / ".venv/bin/mlflow"), "run", str(REPO), "-e", "dynamics", "--env-manager",
                    "local", "-P", "config=spiky", *params], cwd=store.root, env_extra=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = all_runs(store)
    assert run.info.status == "FINISHED" and "dynamics.index" in run.data.metrics
