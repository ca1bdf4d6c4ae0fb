"""IRED quality benchmark: energy diffusion (none / adversarial mining) vs the feedforward
baseline at an equal CPU budget, read against two trivial floors.

Each model trains in its own child process (so peak memory is per model) until it has
used ``--minutes`` of CPU time in training steps (evaluation is not counted), then is
scored with its EMA weights on the fixed val/test/OOD sets of ``--seed``. Printed:

- val / test / test_ood MSE next to the floors on the same sets (predicting zeros;
  predicting the per-entry mean of training targets);
- training throughput (samples/s of CPU time and of wall time) and peak RSS;
- the learning curve (val MSE on a fixed subset at a few points of the budget);
- for the energy models, test MSE against the number of inference energy steps.

Example: ``python bench/ired_quality.py --minutes 3``. Not a test: it asserts nothing and
prints figures for a person (and the issue's closing note).
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
    p.add_argument("--minutes", type=float, default=10.0, help="CPU minutes of training per model (default 10)")
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
    p.add_argument("--worker", help=argparse.SUPPRESS)
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


def _row(cells, widths) -> str:
    return "| " + " | ".join(str(c).rjust(w) for c, w in zip(cells, widths)) + " |"


def report(results: list[dict], args: argparse.Namespace) -> str:
    lines = [f"IRED matrix inversion, n={args.n}, {args.minutes:g} CPU min/model, batch {args.batch}, "
             f"lr {args.lr_energy:g} (energy) / {args.lr_feedforward:g} (feedforward), width {args.hidden}, threads {args.threads}, seed {args.seed}, "
             f"eval sets of {args.n_eval}", ""]
    f = results[0]["floors"]
    head = ["model", "steps", "samples/s cpu", "samples/s wall", "peak MB", "val MSE", "test MSE",
            "test_ood MSE", "test / mean floor"]
    w = [max(len(h), 12) for h in head]
    w[0] = 17
    lines += [_row(head, w), _row(["-" * x for x in w], w)]
    for r in results:
        lines.append(_row([r["model"], r["steps"], f"{r['samples_per_cpu_s']:.0f}", f"{r['samples_per_wall_s']:.0f}",
                           f"{r['peak_rss_mb']:.0f}", f"{r['val']:.5f}", f"{r['test']:.5f}",
                           f"{r['test_ood']:.4f}", f"{r['test'] / f['test']['mean']:.3f}"], w))
    for name in ("zeros", "mean"):
        label = "floor: zeros" if name == "zeros" else "floor: entry mean"
        lines.append(_row([label, "", "", "", "", f"{f['val'][name]:.5f}", f"{f['test'][name]:.5f}",
                           f"{f['test_ood'][name]:.4f}", f"{f['test'][name] / f['test']['mean']:.3f}"], w))
    lines += ["", "learning curve (EMA weights, val MSE on 256 fixed problems):"]
    for r in results:
        pts = ", ".join(f"{c['step']}:{c['val_mse_256']:.5f}" for c in r["curve"])
        lines.append(f"  {r['model']:<12} step:mse  {pts}")
    energy = [r for r in results if "by_inference_steps" in r]
    if energy:
        ks = list(energy[0]["by_inference_steps"])
        lines += ["", "test MSE (first 512 test problems) vs inference energy steps per timestep (published: 5):"]
        head2 = ["model"] + [f"{k} steps" for k in ks]
        w2 = [12] * len(head2)
        lines += [_row(head2, w2), _row(["-" * x for x in w2], w2)]
        for r in energy:
            lines.append(_row([r["model"]] + [f"{r['by_inference_steps'][k]:.5f}" for k in ks], w2))
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return 0
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
