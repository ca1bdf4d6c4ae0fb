"""Stabiliser baselines on the spiky system, and how well the uncertainty index anticipates
its instability events (vs a single-signal trigger on the loss alone: ablation D).

Each (stabiliser, seed) trains the ``dynamics`` Trainer directly (no tracking store: the
figures are about training dynamics, not the platform) for the config's steps on one
thread. Printed, per stabiliser, mean ± std over seeds of: events per 100k steps, time to
recover (steps), wasted-FLOPs share, final validation perplexity, index/loss triggers;
then the monitor's overhead per step, the checkpoint save/load time of the full trainer
state, and trigger precision/recall against events within lead windows, pooled over all
runs, for the index and for the loss-only trigger. A calm ``stable`` run per seed gives the
monitor's false-alarm rate.

Example: ``python bench/dynamics_baselines.py`` (3 seeds, ~10-15 CPU minutes) or
``--seeds 5`` (the sweep's scale). Not a test: it asserts nothing.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import base_overrides, dynamics_config, dynamics_options, ms, table, train  # noqa: E402

STABILISERS = ("none", "cosine", "clip", "zclip", "spam", "adam_hd")


def parse_args(argv=None) -> argparse.Namespace:
    p = dynamics_options(argparse.ArgumentParser(description=__doc__,
                                                 formatter_class=argparse.RawDescriptionHelpFormatter), "stabiliser")
    p.add_argument("--stabilisers", default=",".join(STABILISERS), help="comma-separated subset")
    p.add_argument("--leads", default="0,5,10,25", help="lead windows for precision/recall (steps)")
    p.add_argument("--no-stable", action="store_true", help="skip the calm runs (false-alarm rate)")
    return p.parse_args(argv)


def one_run(config: str, overrides: list[str]) -> dict:
    from tracking import checkpoint

    cfg = dynamics_config(config, overrides)
    step_ms, mon_ms = [], []

    def timings(_, m: dict) -> None:
        step_ms.append(m["perf.step_ms"])
        mon_ms.append(m.get("perf.monitor_ms", 0.0))

    t, cpu_s = train(cfg, timings)
    with tempfile.TemporaryDirectory() as tmp:
        s0 = time.perf_counter()
        path = checkpoint.save(t.snapshot(), Path(tmp) / "cp.ptz")
        save_s = time.perf_counter() - s0
        size = path.stat().st_size
        s0 = time.perf_counter()
        t.restore(checkpoint.load(path))
        load_s = time.perf_counter() - s0
    rep = t.costs()
    return {"cfg": cfg, "report": rep, "ppl": t.evaluate()["metric.perplexity.val"], "cpu_s": cpu_s,
            "step_ms": statistics.median(step_ms), "monitor_ms": statistics.median(mon_ms),
            "save_s": save_s, "load_s": load_s, "size": size, "triggers": list(t.state.triggers),
            "loss_triggers": list(t.state.loss_triggers), "events": [e.start for e in t.events.events]}


def main(argv=None) -> None:
    import torch

    a = parse_args(argv)
    torch.set_num_threads(1)
    stabs = [s for s in a.stabilisers.split(",") if s]
    base = base_overrides(a)
    results: dict[str, list[dict]] = {}
    wall0 = time.time()
    for stab in stabs:
        for seed in range(a.seeds):
            r = one_run(a.config, base + [f"train.stabiliser={stab}", f"seed={seed}"])
            results.setdefault(stab, []).append(r)
            rep = r["report"]
            print(f"  {stab:8s} seed {seed}: {rep.events} events at {r['events']}, ttr {rep.ttr_all}, "
                  f"wasted {rep.wasted_share:.3f}, ppl {r['ppl']:.3f}, {r['cpu_s']:.1f} CPU s", flush=True)
    calm = [] if a.no_stable else [one_run("stable", base + [f"seed={s}"]) for s in range(a.seeds)]
    report(a, results, calm, time.time() - wall0)


def report(a, results: dict[str, list[dict]], calm: list[dict], wall: float) -> None:
    from projects.dynamics.events import match_triggers

    any_run = next(iter(results.values()))[0]
    cfg = any_run["cfg"]
    print(f"\nconfig {a.config}: {cfg.train.steps} steps, GPT {cfg.model.layers}x{cfg.model.d_model} "
          f"(ctx {cfg.data.context}, batch {cfg.train.batch_size}), seeds 0..{a.seeds - 1}, 1 thread; "
          f"wall {wall / 60:.1f} min on a shared 2-core machine\n")
    rows = []
    for stab, runs in results.items():
        reps = [r["report"] for r in runs]
        rows.append([stab, ms([x.per_100k for x in reps], "{:.0f}"), ms([x.time_to_recover for x in reps], "{:.1f}"),
                     ms([x.wasted_share for x in reps], "{:.3f}"), ms([r["ppl"] for r in runs], "{:.3f}"),
                     ms([float(len(r["triggers"])) for r in runs], "{:.1f}"),
                     ms([float(x.unrecovered) for x in reps], "{:.1f}")])
    print(table(rows, ["stabiliser", "events/100k steps", "time to recover", "wasted FLOPs share",
                       "final val ppl", "index triggers", "unrecovered"]))
    flat = [r for runs in results.values() for r in runs]
    step, mon = statistics.mean(r["step_ms"] for r in flat), statistics.mean(r["monitor_ms"] for r in flat)
    print(f"\nmonitor overhead: {mon:.2f} ms/step (median per run, mean over runs) of a {step:.1f} ms step "
          f"({100 * mon / step:.1f}%)")
    print(f"checkpoint (full trainer state, {statistics.mean(r['size'] for r in flat) / 1e6:.2f} MB): "
          f"save {1e3 * statistics.mean(r['save_s'] for r in flat):.1f} ms, "
          f"load+restore {1e3 * statistics.mean(r['load_s'] for r in flat):.1f} ms (mean over runs)")
    print("\nanticipation, pooled over all runs above (precision: triggers followed by an event "
          "within the lead; recall: events preceded by a trigger within it):")
    rows = []
    for lead in (int(x) for x in a.leads.split(",")):
        row = [str(lead)]
        for key in ("triggers", "loss_triggers"):
            ms_ = [match_triggers(r[key], r["events"], lead) for r in flat]
            tp, fired = sum(m["hits"] for m in ms_), sum(m["triggers"] for m in ms_)
            caught, total = sum(m["caught"] for m in ms_), sum(m["events"] for m in ms_)
            row += [f"{tp / max(1, fired):.2f}", f"{caught / max(1, total):.2f}"]
        rows.append(row)
    print(table(rows, ["lead", "index precision", "index recall", "loss-only precision", "loss-only recall"]))
    if calm:
        n = sum(r["cfg"].train.steps for r in calm)
        print(f"\ncalm 'stable' runs ({len(calm)} x {calm[0]['cfg'].train.steps} steps): "
              f"{sum(len(r['events']) for r in calm)} events; false alarms per 1k steps: index "
              f"{1e3 * sum(len(r['triggers']) for r in calm) / n:.2f}, loss-only "
              f"{1e3 * sum(len(r['loss_triggers']) for r in calm) / n:.2f}; "
              f"val ppl {ms([r['ppl'] for r in calm], '{:.3f}')}")


if __name__ == "__main__":
    main()
