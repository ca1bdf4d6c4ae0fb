"""IRED quality benchmark, two views: equal training steps (the main one) and equal CPU time.

**Equal steps** (``--equal-steps N``; issue #17). Every strategy (none, random, adversarial,
mixed) and the feedforward reference trains exactly N steps on several seeds through the real
``ired`` entry point: ``labrun sweep ired_equal_steps`` into a tracking store this bench
keeps (``--store``; an interrupted run loses nothing, the same command finishes the rest).
Then it reads the store back with ``analysis`` and prints, per method, mean ± std over seeds
of test and OOD MSE (best-validation EMA weights), the step at which val MSE first came within
1.1x of its final value, the CPU cost (CPU-seconds per step measured by a separate probe, times
steps), and the paired difference of each method against ``none`` (same seed) with its 95% t
CI, next to the IRED paper's own table. The val-MSE curves (mean ± std) go to
``docs/ired_equal_steps.png`` (against steps) and ``docs/ired_equal_steps_cpu.png`` (against
training CPU-seconds), both logged with the tables to an analysis run in the store.

**Equal CPU time** (default, ``--minutes M``). Each model trains in its own child process
until it has used M CPU-minutes in training steps (evaluation not counted), then is scored with
its EMA weights. A strategy that is costlier per step gets fewer steps, so this view answers
"which is best for a fixed CPU budget", not "which objective trains a better model". Printed:
val / test / test_ood MSE (with the steps reached) next to two floors (predicting zeros;
the per-entry mean of training targets), throughput and peak RSS, the learning curve, and test
MSE against the number of inference energy steps.

**Cost** (``--cost-only``, ``--paper-cost``): CPU-seconds per training step of each model at the
equal-steps scale, or at the ``paper`` config's scale (batch 2048, n=20, 3x512) extrapolated
to its 100k steps.

    python bench/ired_quality.py --equal-steps 1600                 # sweep (resumable) + report
    python bench/ired_quality.py --equal-steps 1600 --report-only   # report what the store holds
    python bench/ired_quality.py --minutes 3                         # the equal-CPU-time view
    python bench/ired_quality.py --paper-cost                        # seconds/step at paper scale

Not a test: it asserts nothing and prints figures for a person (and the issue's closing note).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"none": ("energy", "none"), "random": ("energy", "random"),
          "adversarial": ("energy", "adversarial"), "mixed": ("energy", "mixed"),
          "feedforward": ("feedforward", "none")}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="equal-CPU-time view: CPU minutes of training per model (default 10)")
    p.add_argument("--n", type=int, default=20, help="matrix size n (default 20: 400-dim problems)")
    p.add_argument("--models", default="none,adversarial,feedforward",
                   help=f"comma-separated, from {', '.join(MODELS)} (default: none,adversarial,feedforward)")
    p.add_argument("--batch", type=int, default=256, help="training batch size (default 256)")
    p.add_argument("--lr-energy", type=float, default=3e-4,
                   help="Adam learning rate of the energy models (default 3e-4; 1e-3 diverged after ~1k "
                        "steps in a 3-minute run, 1e-4 is the published long-run value)")
    p.add_argument("--lr-feedforward", type=float, default=1e-3,
                   help="Adam learning rate of the feedforward baseline (default 1e-3)")
    p.add_argument("--hidden", type=int, default=512, help="MLP width (default 512, as published)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads per model (default 1; the budget counts CPU time, not wall time)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-eval", type=int, default=1024, help="size of the val/test/OOD sets (default 1024)")
    p.add_argument("--curve-points", type=int, default=6, help="learning-curve evaluations (default 6)")
    p.add_argument("--inference-steps", default="0,1,2,5,10",
                   help="inference energy steps to compare (default 0,1,2,5,10; 5 is the published value)")
    p.add_argument("--json", type=Path, help="also write all results to this JSON file")
    q = p.add_argument_group("equal steps (issue #17)")
    q.add_argument("--equal-steps", type=int, metavar="N",
                   help="train every model N steps via `labrun sweep ired_equal_steps`, then report")
    q.add_argument("--seeds", type=int, default=5, help="seeds 0..K-1 of the equal-steps sweep (default 5)")
    q.add_argument("--store", type=Path, default=Path("/tmp/ired_equal_steps"),
                   help="folder of the equal-steps tracking store, kept and resumed (default /tmp/ired_equal_steps)")
    q.add_argument("--parallel", type=int, default=2, help="cells at once (default 2: one per core)")
    q.add_argument("--report-only", action="store_true", help="report what the store holds; train nothing")
    q.add_argument("--cost-steps", type=int, default=40,
                   help="timed steps of the CPU-cost probe per model, after 5 warm-up steps (default 40)")
    q.add_argument("--figures", type=Path, default=ROOT / "docs",
                   help="where the curves PNGs go (default docs/)")
    q.add_argument("--cost-only", action="store_true", help="only the CPU-seconds/step probe at the equal-steps scale")
    q.add_argument("--paper-cost", action="store_true",
                   help="CPU-seconds/step at the paper config's scale, extrapolated to its steps")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--cost-worker", help=argparse.SUPPRESS)
    p.add_argument("--scale", default="equal_steps", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def worker(args: argparse.Namespace) -> dict:
    """Train one model for the budget and score it; runs in a child process."""
    import torch

    sys.path.insert(0, str(ROOT))
    from projects.ired.data import MatrixInverseData
    from projects.ired.diffusion import Schedule
    from projects.ired.evaluate import floors, mse
    from projects.ired.model import EMA, build_model
    from projects.ired.objective import energy_losses, feedforward_losses
    from projects.ired.config import MiningConfig

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as the task does: denormals slow adversarial mining ~5x
    kind, strategy = MODELS[args.worker]
    torch.manual_seed(args.seed)
    data = MatrixInverseData(args.n, args.seed, n_val=args.n_eval, n_test=args.n_eval, ood_shift=0.1)
    model = build_model(kind, data.dim, args.hidden, 3, 128)
    ema = EMA(model, 0.995)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr_energy if kind == "energy" else args.lr_feedforward)
    sch = Schedule.cosine(10)
    mining = MiningConfig(strategy=strategy)
    stream = torch.Generator().manual_seed(args.seed)
    budget = args.minutes * 60
    cpu, wall, steps, curve = 0.0, 0.0, 0, []
    next_eval = budget / args.curve_points
    sub_x, sub_y = data.val.x[:256], data.val.y[:256]
    while cpu < budget:
        c0, w0 = time.process_time(), time.perf_counter()
        x, y = data.batch(args.batch, stream)
        losses = energy_losses(model, x, y, sch, mining, stream) if kind == "energy" else feedforward_losses(model, x, y)
        opt.zero_grad(set_to_none=True)
        losses.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update(model)
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        steps += 1
        if not torch.isfinite(losses.total):
            break
        if cpu >= next_eval or cpu >= budget:
            curve.append({"step": steps, "cpu_s": round(cpu, 1),
                          "val_mse_256": mse(ema.model, kind, sub_x, sub_y, sch, seed=args.seed)})
            next_eval += budget / args.curve_points
    out = {"model": args.worker, "kind": kind, "strategy": strategy, "steps": steps,
           "train_cpu_s": cpu, "train_wall_s": wall,
           "samples_per_cpu_s": steps * args.batch / cpu, "samples_per_wall_s": steps * args.batch / wall,
           "curve": curve}
    m = ema.model
    for s in (data.val, data.test, data.test_ood):
        out[s.name] = mse(m, kind, s.x, s.y, sch, seed=args.seed)
    if kind == "energy":  # on the first 512 test problems: sampling costs ~k energy passes each
        tx, ty = data.test.x[:512], data.test.y[:512]
        out["by_inference_steps"] = {
            int(k): mse(m, kind, tx, ty, sch, seed=args.seed, inference_steps=int(k))
            for k in args.inference_steps.split(",")}
    mean = data.target_mean(10_000)
    out["floors"] = {"test": floors(data.test.y, mean), "test_ood": floors(data.test_ood.y, mean),
                     "val": floors(data.val.y, mean)}
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def task_config(name: str):
    """The ired task's config ``name`` (configs/<name>.yaml), validated by the task's schema,
    so the cost probe measures exactly the scale the sweep trains."""
    import yaml

    sys.path.insert(0, str(ROOT))
    from projects.ired.config import Config

    return Config.model_validate(yaml.safe_load((ROOT / "projects/ired/configs" / f"{name}.yaml").read_text()))


def cost_worker(name: str, scale: str, steps: int, threads: int) -> dict:
    """CPU-seconds per training step of one model at a config's scale; runs in a child process.

    Five warm-up steps first (allocator, first-call overheads), then ``steps`` timed with
    ``time.process_time`` around the step alone (no evaluation, no logging)."""
    import torch

    from projects.ired.data import MatrixInverseData
    from projects.ired.diffusion import Schedule
    from projects.ired.model import build_model
    from projects.ired.objective import energy_losses, feedforward_losses

    cfg = task_config(scale)
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    kind, strategy = MODELS[name]
    data = MatrixInverseData(cfg.data.n, 0, n_val=8, n_test=8, ood_shift=cfg.data.ood_shift)
    model = build_model(kind, data.dim, cfg.model.hidden, cfg.model.layers, cfg.model.time_dim)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    sch = Schedule.cosine(cfg.diffusion.timesteps, cfg.diffusion.clamp)
    mining = cfg.mining.model_copy(update={"strategy": strategy})
    stream = torch.Generator().manual_seed(0)
    cpu = 0.0
    for i in range(5 + steps):
        c0 = time.process_time()
        x, y = data.batch(cfg.train.batch_size, stream)
        loss = (energy_losses(model, x, y, sch, mining, stream) if kind == "energy"
                else feedforward_losses(model, x, y)).total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        opt.step()
        if i >= 5:
            cpu += time.process_time() - c0
    return {"model": name, "scale": scale, "steps": steps, "cpu_s_per_step": cpu / steps,
            "batch": cfg.train.batch_size, "n": cfg.data.n, "hidden": cfg.model.hidden,
            "config_steps": cfg.train.steps}


def measure_costs(names: list[str], scale: str, steps: int, threads: int) -> dict[str, dict]:
    """:func:`cost_worker` for each model in its own process, one after the other."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads))
    out = {}
    for name in names:
        proc = subprocess.run([sys.executable, __file__, "--cost-worker", name, f"--scale={scale}",
                               f"--cost-steps={steps}", f"--threads={threads}"],
                              env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"cost probe of {name} failed:\n{proc.stderr[-2000:]}")
        out[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def stored_costs(path: Path, steps: int) -> dict[str, dict]:
    """The equal-steps scale's CPU-s/step per model: measured once per store and kept in
    ``path`` (delete it to measure again), so a report on a busy machine does not wait for it."""
    if path.exists():
        return json.loads(path.read_text())
    costs = measure_costs(list(MODELS), "equal_steps", steps, 1)
    stamp = {"load": os.getloadavg()[0], "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    costs = {k: v | stamp for k, v in costs.items()}
    path.write_text(json.dumps(costs, indent=2))
    return costs


def paper_cost_text(costs: dict[str, dict]) -> str:
    """What the paper config would take on this CPU, extrapolated from the probe."""
    lines = ["CPU cost at the `paper` config's scale (probe: per-step CPU-seconds of training, "
             "1 thread, evaluation excluded), extrapolated linearly to its steps:"]
    for name, c in costs.items():
        total_h = c["cpu_s_per_step"] * c["config_steps"] / 3600
        lines.append(f"  {name:<12} {c['cpu_s_per_step']:.3f} CPU-s/step x {c['config_steps']:,} steps "
                     f"= {total_h:.1f} CPU-hours (batch {c['batch']}, n={c['n']}, width {c['hidden']}, "
                     f"{c['steps']} timed steps)")
    return "\n".join(lines)


def report(results: list[dict], args: argparse.Namespace) -> str:
    lines = [f"IRED matrix inversion at EQUAL CPU TIME (a costlier step gets fewer steps; the 'steps' column "
             f"says how many each reached; --equal-steps N is the equal-steps view), "
             f"n={args.n}, {args.minutes:g} CPU min/model, batch {args.batch}, "
             f"lr {args.lr_energy:g} (energy) / {args.lr_feedforward:g} (feedforward), width {args.hidden}, threads {args.threads}, seed {args.seed}, "
             f"eval sets of {args.n_eval}", ""]
    from analysis.tables import render

    f = results[0]["floors"]
    head = ["model", "steps", "samples/s cpu", "samples/s wall", "peak MB", "val MSE", "test MSE",
            "test_ood MSE", "test / mean floor"]
    rows = [[r["model"], r["steps"], f"{r['samples_per_cpu_s']:.0f}", f"{r['samples_per_wall_s']:.0f}",
             f"{r['peak_rss_mb']:.0f}", f"{r['val']:.5f}", f"{r['test']:.5f}",
             f"{r['test_ood']:.4f}", f"{r['test'] / f['test']['mean']:.3f}"] for r in results]
    for name in ("zeros", "mean"):
        label = "floor: zeros" if name == "zeros" else "floor: entry mean"
        rows.append([label, "", "", "", "", f"{f['val'][name]:.5f}", f"{f['test'][name]:.5f}",
                     f"{f['test_ood'][name]:.4f}", f"{f['test'][name] / f['test']['mean']:.3f}"])
    lines.append(render(rows, head, align="r", boxed=True, min_widths=[17] + [12] * (len(head) - 1)))
    lines += ["", "learning curve (EMA weights, val MSE on 256 fixed problems), as step:mse:"]
    for r in results:
        pts = ", ".join(f"{c['step']}:{c['val_mse_256']:.5f}" for c in r["curve"])
        lines.append(f"  {r['model']:<12} step:mse  {pts}")
    energy = [r for r in results if "by_inference_steps" in r]
    if energy:
        ks = list(energy[0]["by_inference_steps"])
        lines += ["", "test MSE (first 512 test problems) vs inference energy steps per timestep (published: 5):"]
        rows = [[r["model"]] + [f"{r['by_inference_steps'][k]:.5f}" for k in ks] for r in energy]
        lines.append(render(rows, ["model"] + [f"{k} steps" for k in ks], align="r", boxed=True,
                            min_widths=[12] * (len(ks) + 1)))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- equal steps
EXPERIMENT = "ired_equal_steps"
ORDER = ["none", "random", "adversarial", "mixed", "feedforward"]
# The IRED study's own table (10 seeds, published scale, n=20): val MSE per strategy.
STUDY = {"none": 0.0096761, "random": 0.00968396, "adversarial": 0.00982675}


def _store_env(store: Path) -> dict[str, str]:
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{store.resolve()}/mlflow.db", LABRUN_PROGRESS="0")
    for var, val in (("MLFLOW_DISABLE_TELEMETRY", "true"), ("WANDB_MODE", "disabled")):
        env.setdefault(var, val)
    return env


def run_sweep(args: argparse.Namespace) -> int:
    """``labrun sweep ired_equal_steps`` for N steps and K seeds into the kept store (resumes)."""
    args.store.mkdir(parents=True, exist_ok=True)
    seeds = ",".join(str(i) for i in range(args.seeds))
    cmd = [sys.executable, "-m", "labrun", "sweep", str(ROOT / "sweeps/specs/ired_equal_steps.yaml"),
           "--set", f"overrides.train.steps={args.equal_steps}", "--set", f"seeds=[{seeds}]",
           "--parallel", str(args.parallel)]
    env = _store_env(args.store) | {"PYTHONPATH": str(ROOT)}
    return subprocess.run(cmd, cwd=args.store, env=env, stdout=sys.stderr).returncode  # stdout: the report


def load_equal_steps(store: Path, steps: int):
    """FINISHED cells of ``steps`` steps, one row per run, plus their val-MSE histories."""
    from analysis.query import curves_frame, runs_frame

    os.environ.update(_store_env(store))
    frame = runs_frame(EXPERIMENT, metrics=["metric.mse.val"])
    frame = frame[(frame["status"] == "FINISHED") & (frame["params.train.steps"] == steps)]
    frame = frame.sort_values("start_time").drop_duplicates("labrun.fingerprint", keep="last")
    curves = curves_frame(frame["run_id"], ["metric.mse.val"])
    return frame.reset_index(drop=True), curves


def steps_to_within(curve, factor: float = 1.1) -> int:
    """First step whose val MSE is within ``factor`` x the run's final (last) val MSE."""
    final = float(curve["value"].iloc[-1])
    return int(curve.loc[curve["value"] <= factor * final, "step"].iloc[0])


def per_run(frame, curves, costs: dict[str, dict]):
    """One row per run: method, seed, test / OOD MSE, steps to 1.1x final val, CPU cost."""
    import pandas as pd

    rows = []
    for run in frame.to_dict("records"):
        curve = curves[curves["run_id"] == run["run_id"]].sort_values("step")
        method = run["labrun.method"]
        per_step = costs.get(method, {}).get("cpu_s_per_step", float("nan"))
        reach = steps_to_within(curve) if len(curve) else float("nan")
        steps = int(run["params.train.steps"])
        rows.append({"method": method, "seed": int(run["labrun.seed"]),
                     "test": run["final.metric.mse.test"], "ood": run["final.metric.mse.test_ood"],
                     "val": run["final.metric.mse.val"], "steps": steps, "reach_steps": reach,
                     "cpu_s": per_step * steps, "reach_cpu_s": per_step * reach,
                     "wall_s": run["duration_s"]})
    return pd.DataFrame(rows)


def equal_steps_table(runs):
    """Mean ± std over seeds per method, and paired differences against ``none`` (their
    footnotes in ``paired.attrs["notes"]``)."""
    import pandas as pd

    from analysis.stats import describe, paired_comparison
    from analysis.tables import Footnotes, interval, num, pm, pvalue

    main, paired, notes = [], [], Footnotes()
    base = runs[runs["method"] == "none"].set_index("seed")
    for m in [m for m in ORDER if m in set(runs["method"])]:
        sub = runs[runs["method"] == m].set_index("seed")
        d = {k: describe(sub[k]) for k in ("test", "ood", "reach_steps", "reach_cpu_s")}
        main.append({"method": m, "seeds": d["test"].n, "test MSE": pm(d["test"].mean, d["test"].std),
                     "OOD MSE": pm(d["ood"].mean, d["ood"].std, 3),
                     "steps to 1.1x final val": pm(d["reach_steps"].mean, d["reach_steps"].std, 3),
                     "CPU-s/step": num(sub["cpu_s"].iloc[0] / sub["steps"].iloc[0], 3),
                     "CPU-s to 1.1x": pm(d["reach_cpu_s"].mean, d["reach_cpu_s"].std, 3),
                     "CPU-s, all steps": num(sub["cpu_s"].iloc[0], 3),
                     "paper (val MSE)": num(STUDY.get(m), 6) if m in STUDY else "–"})
        if m == "none" or base.empty:
            continue
        seeds = sorted(set(sub.index) & set(base.index))
        for key, label in (("test", "test"), ("ood", "OOD")):
            p = paired_comparison(sub.loc[seeds, key], base.loc[seeds, key], labels=(m, "none"))
            rel = 100 * p.mean_diff / base.loc[seeds, key].mean()
            paper = (f"{100 * (STUDY[m] / STUDY['none'] - 1):+.2f}%" if m in STUDY and key == "test" else "–")
            paired.append({"comparison": f"{m} − none", "metric": label, "pairs": p.n,
                           "mean diff": num(p.mean_diff, 3),
                           "95% CI": notes.mark(interval(p.ci_low, p.ci_high, 3), p.notes.get("ci")),
                           "relative": f"{rel:+.2f}%", "paired t p": notes.mark(pvalue(p.t_p), p.notes.get("t_p")),
                           "paper": paper})
    paired = pd.DataFrame(paired)
    paired.attrs["notes"] = notes.lines       # the footnotes of its marked cells
    return pd.DataFrame(main), paired


def plot_curves(frame, curves, costs: dict[str, dict], folder: Path) -> list[Path]:
    """Val MSE mean ± std over seeds against steps, and against training CPU-seconds."""
    from analysis.curves import _pyplot, _save, band_frame

    bands = band_frame(curves, dict(zip(frame["run_id"], frame["labrun.method"])), "metric.mse.val")
    plt = _pyplot()
    paths = []
    for suffix, xlabel in (("", "training step"), ("_cpu", "training CPU-seconds (probe CPU-s/step x step)")):
        fig, ax = plt.subplots(figsize=(7.0, 4.2))
        for m in [m for m in ORDER if m in set(bands["group"])]:
            b = bands[bands["group"] == m]
            x = b["step"] * (costs.get(m, {}).get("cpu_s_per_step", float("nan")) if suffix else 1)
            line, = ax.plot(x, b["mean"], marker="o", markersize=2.5, label=f"{m} (n={int(b['n'].max())})")
            ax.fill_between(x, b["mean"] - b["std"].fillna(0), b["mean"] + b["std"].fillna(0),
                            color=line.get_color(), alpha=0.2, linewidth=0)
        floor = frame.get("final.metric.floor.mean.test")
        if floor is not None and floor.notna().any():
            ax.axhline(float(floor.mean()), color="grey", linestyle="--", linewidth=1,
                       label="floor: per-entry mean (test)")
        low = float(bands["mean"].min())
        ax.set_yscale("log")
        ax.set_ylim(low * 0.95, low * 2.5)
        steps = int(frame["params.train.steps"].iloc[0])
        ax.set(xlabel=xlabel, ylabel="val MSE (EMA weights)",
               title=f"IRED n={int(frame['params.data.n'].iloc[0])}, {steps} steps each: mean ± std over seeds")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        paths.append(_save(fig, folder / f"ired_equal_steps{suffix}.png"))
    return paths


def log_analysis(store: Path, steps: int, text: str, figures: list[Path]) -> str:
    """The ``analysis`` pipeline on test MSE (tables, ranks, paired tests) as an analysis run,
    with this bench's table and curves figures added to it; returns the run id."""
    import tempfile

    from analysis.report import AnalyzeOptions, analyze
    from tracking.store import client

    from tracking import ConfigError

    out = Path(tempfile.mkdtemp(prefix="ired-equal-steps-"))
    c = client()
    try:
        run_id = analyze(AnalyzeOptions(experiments=[EXPERIMENT], metric="metric.mse.test",
                                        filters=[f"train.steps={steps}"], curves=False, out_dir=out)).run_id
    except ConfigError as exc:  # one seed per method so far: no statistics, but keep the figures
        print(f"ired_quality: analysis tables skipped ({exc})", file=sys.stderr)
        exp = c.get_experiment_by_name(EXPERIMENT).experiment_id
        run_id = c.create_run(exp, run_name="analysis metric.mse.test (bench)",
                              tags={"labrun.analysis": "metric.mse.test"}).info.run_id
        c.set_terminated(run_id, "FINISHED")
    (out / "equal_steps.md").write_text(text)
    c.log_artifact(run_id, str(out / "equal_steps.md"))
    for f in figures:
        c.log_artifact(run_id, str(f), "figures")
    c.set_tag(run_id, "labrun.analysis.bench", f"ired_quality --equal-steps {steps}")
    return run_id


def report_equal_steps(args: argparse.Namespace) -> str:
    """The equal-steps tables, figures and analysis run from what the store holds."""
    from analysis.tables import to_markdown

    frame, curves = load_equal_steps(args.store, args.equal_steps)
    if frame.empty:
        raise SystemExit(f"ired_quality: no FINISHED {args.equal_steps}-step runs in {args.store}; "
                         f"run without --report-only first")
    costs = stored_costs(args.store / "costs.json", args.cost_steps)
    runs = per_run(frame, curves, costs)
    main, paired = equal_steps_table(runs)
    cfg = task_config("equal_steps")
    head = (f"IRED matrix inversion at equal steps: n={cfg.data.n}, width {cfg.model.hidden}x{cfg.model.layers}, "
            f"batch {cfg.train.batch_size}, lr {cfg.train.lr:g}, {args.equal_steps} steps for every model, "
            f"seeds {sorted(set(runs['seed']))}; test/OOD MSE on {cfg.data.n_test} problems with the "
            f"best-validation EMA weights (val every {cfg.train.eval_every} steps on {cfg.data.n_val}). "
            f"CPU-s/step: a separate probe ({costs['none']['steps']} steps after 5 warm-up, 1 thread, load "
            f"{costs['none'].get('load', float('nan')):.1f}, {costs['none'].get('measured_at', '?')}), training "
            f"only; evaluation excluded. 'paper' = the IRED study's own "
            f"val MSE (10 seeds, n=20, published scale).")
    wall = runs.groupby("method")["wall_s"].mean().reindex([m for m in ORDER if m in set(runs["method"])])
    text = "\n\n".join([head, to_markdown(main), "Paired differences against `none` (same seed; a − none):",
                         to_markdown(paired) + "".join("\n" + n + "\n" for n in paired.attrs["notes"]) if len(paired)
                         else "(none yet: needs another method on a seed `none` has)",
                         "Run wall time (mean s per run, incl. evaluation, machine shared): " +
                         ", ".join(f"{m} {w:.0f}" for m, w in wall.items())])
    figures = plot_curves(frame, curves, costs, args.figures)
    run_id = log_analysis(args.store, args.equal_steps, text, figures)
    return text + f"\n\nfigures: {', '.join(str(f) for f in figures)}\nanalysis run {run_id} in {args.store}/mlflow.db"


def equal_steps_main(args: argparse.Namespace) -> int:
    if args.equal_steps < 1 or args.seeds < 2:
        print(f"ired_quality: --equal-steps must be >= 1 and --seeds >= 2 (paired tests need 2 seeds); "
              f"got {args.equal_steps} and {args.seeds}", file=sys.stderr)
        return 2
    if not args.report_only:
        c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        rc = run_sweep(args)
        if rc != 0:
            print(f"ired_quality: the sweep exited {rc}; rerun the same command to finish it", file=sys.stderr)
            return rc
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        print(f"sweep: {(c1.ru_utime + c1.ru_stime - c0.ru_utime - c0.ru_stime) / 60:.1f} CPU-minutes "
              f"in this invocation's child processes", file=sys.stderr)
    print(report_equal_steps(args))
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    if args.cost_worker:
        print(json.dumps(cost_worker(args.cost_worker, args.scale, args.cost_steps, args.threads)))
        return 0
    if args.paper_cost:
        print(paper_cost_text(measure_costs(["none", "adversarial"], "paper", args.cost_steps, args.threads)))
        return 0
    if args.cost_only:
        args.store.mkdir(parents=True, exist_ok=True)
        (args.store / "costs.json").unlink(missing_ok=True)
        for name, c in stored_costs(args.store / "costs.json", args.cost_steps).items():
            print(f"{name:<12} {c['cpu_s_per_step']:.4f} CPU-s/step ({c['steps']} steps, batch {c['batch']}, n={c['n']})")
        return 0
    if args.equal_steps is not None:
        if "://" in str(args.store) or str(args.store).startswith("sqlite:"):
            print(f"ired_quality: --store takes the folder that holds mlflow.db, not a URI ({args.store}); "
                  "e.g. --store /tmp/ired_equal_steps", file=sys.stderr)
            return 2
        return equal_steps_main(args)
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODELS]
    if unknown:
        print(f"ired_quality: unknown model(s) {', '.join(unknown)}; valid: {', '.join(MODELS)}", file=sys.stderr)
        return 2
    results = []
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(args.threads))
    passthrough = [f"--minutes={args.minutes}", f"--n={args.n}", f"--batch={args.batch}", f"--lr-energy={args.lr_energy}",
                   f"--lr-feedforward={args.lr_feedforward}",
                   f"--hidden={args.hidden}", f"--threads={args.threads}", f"--seed={args.seed}",
                   f"--n-eval={args.n_eval}", f"--curve-points={args.curve_points}",
                   f"--inference-steps={args.inference_steps}"]
    for name in names:
        t0 = time.time()
        print(f"training {name} for {args.minutes:g} CPU minutes ...", file=sys.stderr, flush=True)
        proc = subprocess.run([sys.executable, __file__, *passthrough, "--worker", name], env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"ired_quality: {name} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
            return 1
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"  done in {time.time() - t0:.0f} s wall", file=sys.stderr, flush=True)
    text = report(results, args)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "results": results},
                                        indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
