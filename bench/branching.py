"""Branch simulation (issue #13) against the fixed-schedule baseline on the spiky system.

Methods: ``baseline`` (stabiliser none, no branching), ``A`` rules only (no proxy), ``B``
proxy without verification, ``C`` proxy with verification (the full method), ``D`` C fired
by the loss-only trigger instead of the uncertainty index. Each (method, seed) drives the
``dynamics`` Trainer and a Brancher directly (no tracking store: the figures are about
training dynamics) for the config's steps on one thread. The proxy's pre-training data are
the cached warm-up collection of ``branch.pretrain=auto`` (a seed-1000 baseline run and
rollouts from its trigger points; see projects/dynamics/proxy/collect.py): its CPU
time is printed apart, it is not counted in any run's waste.

Printed per method, mean ± std over seeds: instability events per 100k steps, wasted-FLOPs
share (the branch simulation's own compute counted as waste, and apart the training-only
share), time to recover, final validation perplexity with a paired t-test against the
baseline (same seeds), branch rate (episodes per 1k steps), proxy latency (CPU ms per
episode: Optuna ask/tell plus proxy scoring), verification CPU s per run, conformal coverage
of the verified candidates against the nominal levels, CPU s per run. Then the study's
milestone M1 (events -30 % and wasted FLOPs -20 % against the baseline) with the measured
change and a plain verdict. Not a test: it asserts nothing.

Example: ``python bench/branching.py`` (3 seeds) or ``--seeds 5`` (the sweep's scale).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._common import base_overrides, dynamics_config, dynamics_options, ms, table, train  # noqa: E402

METHODS = {"baseline": ["branch.enabled=false"],
           "A": ["branch.enabled=true", "branch.mode=rules", "branch.signal=index"],
           "B": ["branch.enabled=true", "branch.mode=proxy", "branch.signal=index"],
           "C": ["branch.enabled=true", "branch.mode=proxy_verify", "branch.signal=index"],
           "D": ["branch.enabled=true", "branch.mode=proxy_verify", "branch.signal=loss"]}
NAMES = {"baseline": "fixed schedule (none)", "A": "A rules, no proxy", "B": "B proxy, unverified",
         "C": "C proxy + verify (full)", "D": "D = C, loss-only trigger"}


def parse_args(argv=None) -> argparse.Namespace:
    p = dynamics_options(argparse.ArgumentParser(description=__doc__,
                                                 formatter_class=argparse.RawDescriptionHelpFormatter), "method")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of baseline,A,B,C,D")
    return p.parse_args(argv)


def build_brancher(cfg):
    from projects.dynamics.proxy.collect import pretrain_rows
    from projects.dynamics.proxy.features import feature_names
    from projects.dynamics.branch.orchestrator import Brancher
    from projects.dynamics.proxy.model import Proxy

    b = cfg.branch
    if b.mode == "rules":
        return Brancher(cfg), {}
    rows, source = pretrain_rows(cfg)
    proxy = Proxy(len(feature_names(cfg.model.layers)), b.horizon, b.hidden, b.epochs, cfg.seed, b.confidence,
                  b.risk_level)
    t0 = time.process_time()
    report = proxy.fit(rows)
    return Brancher(cfg, proxy=proxy, log_rows=rows), {**source, **report, "fit_cpu_s": time.process_time() - t0}


def one_run(config: str, overrides: list[str]) -> dict:
    cfg = dynamics_config(config, overrides)
    brancher, pre = build_brancher(cfg) if cfg.branch.enabled else (None, {})
    t, cpu_s = train(cfg, brancher.after_step if brancher is not None else None)
    rep = t.costs()
    s = brancher.summary(len(t.state.losses), t.flops_per_step) if brancher else {}
    extra = s.get("branch_flops", 0.0)
    wasted = (rep.wasted_flops + extra) / (rep.total_flops + extra)
    return {"cfg": cfg, "report": rep, "wasted": wasted, "ppl": t.evaluate()["metric.perplexity.val"], "cpu_s": cpu_s,
            "branch": s, "pre": pre, "events": [e.start for e in t.events.events]}


def main(argv=None) -> None:
    import torch

    a = parse_args(argv)
    torch.set_num_threads(1)
    base = base_overrides(a)
    methods = [m for m in a.methods.split(",") if m]
    results: dict[str, list[dict]] = {}
    wall0, cpu0 = time.time(), time.process_time()
    for method in methods:
        for seed in range(a.seeds):
            r = one_run(a.config, base + METHODS[method] + [f"seed={seed}"])
            results.setdefault(method, []).append(r)
            rep, b = r["report"], r["branch"]
            print(f"  {method:8s} seed {seed}: {rep.events} events at {r['events']}, wasted {r['wasted']:.3f} "
                  f"(training {rep.wasted_share:.3f}), ppl {r['ppl']:.3f}, episodes {b.get('episodes', 0):.0f}, "
                  f"{r['cpu_s']:.1f} CPU s", flush=True)
    report(a, results, time.time() - wall0, time.process_time() - cpu0)


def report(a, results: dict[str, list[dict]], wall: float, cpu: float) -> None:
    cfg = next(iter(results.values()))[0]["cfg"]
    b = cfg.branch
    print(f"\nconfig {a.config}: {cfg.train.steps} steps, GPT {cfg.model.layers}x{cfg.model.d_model}, seeds "
          f"0..{a.seeds - 1}, 1 thread; branch k={b.k}, N={b.horizon}, hold={b.hold}, {b.proposals} proposals, "
          f"top {b.top_k}; {cpu / 60:.1f} CPU min in this process ({wall / 60:.1f} min wall on a shared 2-core "
          f"machine, load average {os.getloadavg()[0]:.1f} at the end: CPU seconds inflate under load)")
    pre = next((r["pre"] for runs in results.values() for r in runs if r["pre"]), None)
    if pre:
        nan = float("nan")
        print(f"proxy pre-training: {pre.get('rows', 0):.0f} rows from {pre['source']} ({_collected(pre)}); "
              f"fit {pre['fit_cpu_s']:.2f} CPU s; held-out coverage: interval {pre.get('coverage.interval', nan):.2f} "
              f"(nominal {b.confidence}), quantile {pre.get('coverage.quantile', nan):.2f} (nominal {b.risk_level}) "
              f"on {pre.get('test_rows', 0):.0f} rows")
    rows = []
    for method, runs in results.items():
        reps, br = [r["report"] for r in runs], [r["branch"] for r in runs]
        get = lambda k: [x.get(k, float("nan")) for x in br]  # noqa: E731
        rows.append([NAMES[method], ms([x.per_100k for x in reps], "{:.0f}"), ms([r["wasted"] for r in runs], "{:.3f}"),
                     ms([x.wasted_share for x in reps], "{:.3f}"), ms([x.time_to_recover for x in reps], "{:.1f}"),
                     ms([r["ppl"] for r in runs], "{:.3f}"), _ttest(results, method), ms(get("rate_per_1k"), "{:.1f}"),
                     ms(get("proxy_ms"), "{:.0f}"), ms(get("verify_s"), "{:.1f}"), _coverage(br),
                     ms([r["cpu_s"] for r in runs], "{:.0f}")])
    print(table(rows, ["method", "events/100k", "wasted share (all)", "wasted (training)", "time to recover",
                       "final val ppl", "ppl vs baseline (paired t)", "branches/1k", "proxy ms/episode",
                       "verify CPU s/run", "coverage int/q", "CPU s/run"]))
    milestone(results)


def _collected(pre: dict) -> str:
    return "cached" if pre.get("cached") else f"collected in {pre.get('collect_cpu_s', 0):.1f} CPU s"


def _ttest(results: dict, method: str) -> str:
    if method == "baseline" or "baseline" not in results:
        return "-"
    from analysis.stats import paired_comparison
    from analysis.tables import pvalue

    x, y = [r["ppl"] for r in results[method]], [r["ppl"] for r in results["baseline"]]
    n = min(len(x), len(y))
    if n < 2:
        return "n < 2"
    p = paired_comparison(x[:n], y[:n])
    if p.notes.get("t_p"):   # identical differences: a t-test would claim p ~ 0
        return f"{p.mean_diff:+.3f} (no t-test: {p.notes['t_p'].split(':')[0]})"
    return f"{p.mean_diff:+.3f} (t={p.t_stat:.2f}, p={pvalue(p.t_p)})"


def _coverage(br: list[dict]) -> str:
    n = sum(x.get("coverage_n", 0) for x in br)
    if not n:
        return "-"
    iv = sum(x["coverage_interval"] * x["coverage_n"] for x in br if x.get("coverage_n")) / n
    q = sum(x["coverage_quantile"] * x["coverage_n"] for x in br if x.get("coverage_n")) / n
    return f"{iv:.2f}/{q:.2f} (n={n:.0f})"


def milestone(results: dict) -> None:
    """M1: events -30 % and wasted FLOPs -20 % against the baseline, measured on means over seeds."""
    if "baseline" not in results:
        return
    base = results["baseline"]
    ev0 = statistics.mean(r["report"].per_100k for r in base)
    w0 = statistics.mean(r["wasted"] for r in base)
    print("\nM1 (events -30 % and wasted FLOPs -20 % vs the fixed-schedule baseline, means over the same seeds; "
          "wasted counts the branch simulation's compute):")
    for method, runs in results.items():
        if method == "baseline":
            continue
        ev = statistics.mean(r["report"].per_100k for r in runs) / ev0 - 1 if ev0 else float("nan")
        w = statistics.mean(r["wasted"] for r in runs) / w0 - 1 if w0 else float("nan")
        met = ev <= -0.30 and w <= -0.20
        print(f"  {NAMES[method]:26s} events {100 * ev:+.0f} % (target -30 %), wasted FLOPs {100 * w:+.0f} % "
              f"(target -20 %): {'MET' if met else 'NOT met'} at this scale")


if __name__ == "__main__":
    main()
