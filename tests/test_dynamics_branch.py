"""Branch simulation (issue #13): an episode is deterministic given its seed manifest, a
"no change" rollout from cp_{t-k} is the original trajectory, a corrupted branch
checkpoint falls back with a clear message, the Parquet log round-trips with its schema,
actions hold and release, and a branching run records its episodes as nested MLflow runs."""
from __future__ import annotations

import json
import logging
import math

import pytest
import torch

from projects.dynamics.config import Config
from tracking.config import resolve_config

TINY = ["data.context=16", "data.max_chars=40000", "model.layers=1", "model.d_model=16", "model.heads=2",
        "train.batch_size=4", "train.steps=40", "train.eval_batches=1", "train.activations_every=5",
        "monitor.window=10", "monitor.warmup=4", "monitor.history=4", "monitor.horizon=2",
        "events.warmup=5", "events.window=10", "instability.lr_spikes=[14]", "instability.lr_spike_factor=30",
        "instability.noisy_steps=[26]", "branch.enabled=true", "branch.k=3", "branch.horizon=6", "branch.hold=6",
        "branch.window=4", "branch.cooldown=6", "branch.proposals=16", "branch.top_k=2", "branch.epochs=30",
        "branch.pretrain_points=2", "branch.pretrain_actions=2", "branch.hidden=16"]


def tiny(tmp_path, *extra: str) -> Config:
    return resolve_config(Config, None, TINY + [f"branch.cache_dir={tmp_path / 'cache'}", *extra])


def _clean(m: dict) -> dict:
    return {k: v for k, v in m.items() if not k.startswith("perf.")}


def _brancher(cfg, **kw):
    from projects.dynamics.proxy.collect import pretrain_rows
    from projects.dynamics.proxy.features import feature_names
    from projects.dynamics.branch.orchestrator import Brancher
    from projects.dynamics.proxy.model import Proxy

    b = cfg.branch
    rows, _ = pretrain_rows(cfg)
    proxy = Proxy(len(feature_names(cfg.model.layers)), b.horizon, b.hidden, b.epochs, cfg.seed, b.confidence,
                  b.risk_level)
    proxy.fit(rows)
    return Brancher(cfg, proxy=proxy, log_rows=rows, **kw)


def _ride(t, br, steps):
    """Step the trainer with the brancher watching, but never branching (triggers masked)."""
    for _ in range(steps):
        m = t.step()
        br.after_step(t, {**m, "dynamics.trigger": 0.0, "dynamics.trigger_loss": 0.0})


def test_an_episode_is_deterministic_given_its_seed_manifest(tmp_path):
    from projects.dynamics.trainer import Trainer

    torch.set_num_threads(1)
    cfg = tiny(tmp_path)
    t, br = Trainer(cfg), _brancher(cfg)
    _ride(t, br, 16)                                 # the LR spike at 14 is in the last k steps
    before = t.snapshot()
    first = br.decide(t, 16)
    second = br.decide(t, 16)
    assert first.manifest == second.manifest and first.manifest["branch_step"] == 13
    assert first.decision() == second.decision()
    assert [c["score"] for c in first.candidates] == [c["score"] for c in second.candidates]
    assert len(first.candidates) > 2 and len(first.decision()["verified"]) == cfg.branch.top_k
    t2 = Trainer(cfg)                                # decide() left the trainer where it was
    t2.restore(before)
    assert [_clean(t.step()) for _ in range(3)] == [_clean(t2.step()) for _ in range(3)]


def test_a_no_change_rollout_from_the_branch_point_is_the_original_trajectory(tmp_path):
    from projects.dynamics.branch.actions import NULL, Action
    from projects.dynamics.branch.verify import rollout
    from projects.dynamics.trainer import Trainer

    torch.set_num_threads(1)
    cfg = tiny(tmp_path, "branch.pretrain=none")
    t, br = Trainer(cfg), _brancher_without_proxy(cfg)
    _ride(t, br, 12)
    snap, prev = br.ring[-1][1], list(br.rows)
    original = [_clean(t.step()) for _ in range(6)]  # crosses the LR spike at 14
    r = rollout(t, snap, NULL, 6, hold=6, reorder_seed=1, prev_rows=prev)
    assert [_clean(m) for m in r.metrics] == original
    other = rollout(t, snap, Action(lr=-0.2), 6, hold=6, reorder_seed=1, prev_rows=prev)
    assert [m["loss.train"] for m in other.metrics] != [m["loss.train"] for m in original]
    assert other.metrics[0]["diag.lr"] == pytest.approx(0.8 * original[0]["diag.lr"])


def _brancher_without_proxy(cfg, **kw):
    from projects.dynamics.branch.orchestrator import Brancher

    return Brancher(cfg, **kw)


def test_a_corrupted_branch_checkpoint_falls_back_with_a_clear_message(tmp_path, caplog):
    from tracking import checkpoint
    from projects.dynamics.trainer import Trainer

    torch.set_num_threads(1)
    folder = tmp_path / "checkpoints"
    cfg = tiny(tmp_path, "branch.from_files=true", "branch.mode=rules")
    t = Trainer(cfg)
    br = _brancher_without_proxy(cfg, checkpoint_dir=folder)
    _ride(t, br, 13)
    path = checkpoint.save(t.snapshot(), folder / "cp_13.ptz")
    _ride(t, br, 3)
    good = br.decide(t, 16)
    assert good.source == "file:cp_13.ptz" and good.fallback is None and good.branch_point == 13
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with caplog.at_level(logging.WARNING, logger="labrun.dynamics.branch"):
        plan = br.decide(t, 16)
    assert plan.source == "memory" and plan.branch_point == 13
    assert "cp_13.ptz is unusable" in plan.fallback and "in-memory snapshot at step 13" in plan.fallback
    assert any("cp_13.ptz is unusable" in r.getMessage() for r in caplog.records)
    assert plan.decision()["fallback"] == plan.fallback
    assert [m["loss.train"] for m in plan.rollouts[plan.chosen.key()].metrics] == \
        [m["loss.train"] for m in good.rollouts[good.chosen.key()].metrics]   # the same branch point's state


def test_the_parquet_log_round_trips_with_its_schema(tmp_path):
    import pyarrow.parquet as pq

    from projects.dynamics.proxy import logdb
    from projects.dynamics.proxy.collect import pretrain_rows
    from projects.dynamics.proxy.features import feature_names

    cfg = tiny(tmp_path)
    rows, src = pretrain_rows(cfg)
    assert not src["cached"] and {r["source"] for r in rows} == {"baseline", "warmup"}
    names = feature_names(cfg.model.layers)
    path = logdb.write(rows, names, tmp_path / "log_db.parquet")
    back, back_names = logdb.read(path)
    assert back_names == names and len(back) == len(rows)
    for a, b in zip(rows, back):
        for key, value in a.items():
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(b[key])
            else:
                assert b[key] == value, key
    sch = pq.read_schema(path)
    for f in sch:
        meta = {k.decode(): v.decode() for k, v in f.metadata.items()}
        assert meta["unit"] and meta["meaning"], f.name
    assert str(sch.field("y_diverged").type) == "bool" and str(sch.field("step").type) == "int64"
    assert pretrain_rows(cfg)[1]["cached"]       # the second run reads the cache


def test_an_action_holds_for_its_window_and_is_checkpointed(tmp_path):
    from projects.dynamics.branch.actions import Action, apply
    from projects.dynamics.trainer import Trainer

    cfg = tiny(tmp_path, "branch.pretrain=none")
    t = Trainer(cfg)
    for _ in range(5):
        base = t.step()["diag.lr"]
    apply(t, Action(lr=-0.1, clip="fixed", momentum_reset=True), 3, 0, [])
    assert all(float(v["exp_avg"].abs().sum()) == 0 for v in t.optimizer.state.values())
    snap = t.snapshot()
    assert snap["objects"]["knobs"]["until"] == 8
    lrs = [t.step()["diag.lr"] for _ in range(4)]
    assert lrs[:3] == pytest.approx([0.9 * base] * 3) and lrs[3] == pytest.approx(base)
    t.restore(snap)
    assert t.knobs.active(6) and t.knobs.clipper is not None


def test_split_conformal_covers_at_the_nominal_level_on_exchangeable_data():
    import random

    from projects.dynamics.proxy.conformal import Calibration, coverage

    rng = random.Random(0)
    cal = Calibration(0.9, 0.8).fit([rng.gauss(0, 1) for _ in range(400)])
    y = [rng.gauss(0, 1) for _ in range(2000)]
    lo, hi = cal.interval([0.0] * len(y))
    cov = coverage(y, lo, hi, cal.quantile([0.0] * len(y)))
    assert 0.87 < cov["interval"] < 0.93 and 0.76 < cov["quantile"] < 0.84


@pytest.mark.parametrize("override, fragment", [("branch.horizon=2", "must exceed branch.k"),
                                                ("branch.mode=oracle", "branch.mode"),
                                                ("branch.rule.lr=-0.5", "branch.rule.lr")])
def test_bad_branch_config_is_one_line_and_exit_2(override, fragment, capsys):
    from tracking import load_config

    with pytest.raises(SystemExit) as exc:
        load_config(Config, ["--set", "branch.enabled=true", "--set", override], prog="dynamics")
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and len(err.splitlines()) == 1 and fragment in err, err


def test_a_branching_run_records_episodes_as_nested_runs(store, tmp_path):
    from projects.dynamics.train import main

    argv = []
    for o in TINY + [f"branch.cache_dir={tmp_path / 'cache'}", "train.steps=36", "checkpoint.every=12"]:
        argv += ["--set", o]
    main(argv)
    runs = store.search_runs([store.get_experiment_by_name("dynamics").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert parent.info.status == "FINISHED" and parent.data.tags["labrun.method"] == "branch_proxy_verify"
    m = parent.data.metrics
    assert m["dynamics.branch.episodes"] == len(children) >= 1
    assert {"dynamics.branch.rate", "perf.branch.proxy_ms", "perf.branch.verify_s", "dynamics.branch.flops_share",
            "dynamics.events.wasted_share_training"} <= set(m)
    assert m["dynamics.events.wasted_share"] >= m["dynamics.events.wasted_share_training"]
    assert "log_db.parquet" in {a.path for a in store.list_artifacts(parent.info.run_id)}
    child = children[0]
    assert child.info.run_name == f"branch.{child.data.tags['labrun.branch.trigger_step']}"
    files = {a.path for a in store.list_artifacts(child.info.run_id)}
    assert {"decision.json", "seed_manifest.json"} <= files
    assert any(f.startswith("candidate_") for f in files) and any(f.startswith("verification_") for f in files)
    decision = json.load(open(store.download_artifacts(child.info.run_id, "decision.json", str(tmp_path))))
    assert decision["why"] and decision["branch_step"] == decision["trigger_step"] - decision["k"]
