"""SSMO segmentation bench: a U-Net and an FCN on the generated shapes, four methods, every shift.

For each method (independent, naive, ssmo-hard, ssmo-soft) and seed, the pair is trained once on
the clean training scenes, in-process with the task API ``projects/mutual/train.py`` uses (the
same ``Task``, ``joint_step``, seeds and batch order, without a tracking store); each model is
kept at its best validation-mIoU epoch. Every condition of the study changes the *test* set
only (corruptions, ``resolution_shift``, ``domain_shift``), so the run of a condition trains the
very same pair: one training per (method, seed) is scored on every condition's test split. The
bench prints, per condition:

- the majority-class map floor (the training set's most frequent class at every pixel);
- mean ± std over seeds of each model's corpus-level test mIoU (and pixel accuracy);
- the paired difference (same seed) of each mutual method vs ``independent``, per model, with
  its 95 % t-CI and the paired t-test's p (``analysis.stats``);
- the CPU seconds of the trainings and evaluations.

    python bench/mutual_segmentation.py                          # 3 seeds, ~8-10 CPU-minutes
    python bench/mutual_segmentation.py --seeds 5 --epochs 10 --n-train 1000
    python bench/mutual_segmentation.py --conditions clean domain_shift --set seg.domain_shift=texture

Prints, asserts nothing. There is no published anchor for this generated set; read the
numbers against the floor and the clean column.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import diff_cells, print_table  # noqa: E402

METHODS = ("independent", "naive", "ssmo-hard", "ssmo-soft")
CONDITIONS = ("clean", "corrupt_gaussian_noise_3", "corrupt_gaussian_blur_3", "corrupt_contrast_3",
              "resolution_shift", "domain_shift")


def _config(args, *extra: str):
    """The default-scale config with the bench's sizes (and any --set)."""
    from projects.mutual.config import Config
    from tracking import resolve_config

    over = [f"seg.n_train={args.n_train}", f"seg.n_val={args.n_val}", f"seg.n_test={args.n_test}",
            f"train.epochs={args.epochs}", f"train.batch_size={args.batch_size}", f"train.lr={args.lr}",
            f"model_a.width={args.width_a}", f"model_b.width={args.width_b}", *args.set, *extra]
    return resolve_config(Config, "segmentation_shapes", over)


def _train(cfg):
    """The pair trained as train.py does; each model's state at its best validation mIoU."""
    import torch

    from projects.mutual.data.base import derived_generator
    from projects.mutual.joint import evaluate, iterate_batches, joint_step, make_optimizer
    from projects.mutual.methods import build_method
    from projects.mutual.tasks import get_task

    task = get_task("segmentation")(cfg)
    data = task.load_data()
    torch.manual_seed(derived_generator(cfg.seed, "init").initial_seed())
    a, b = task.build_models(data)
    models = {"a": a, "b": b}
    opts = {m: make_optimizer(models[m], cfg.train) for m in models}
    method, gen = build_method(cfg.method), derived_generator(cfg.seed, "batches")
    best = {m: (-math.inf, None, 0) for m in models}
    n_batches = math.ceil(len(data.train) / cfg.train.batch_size)
    for epoch in range(1, cfg.train.epochs + 1):
        for i, batch in enumerate(iterate_batches(data.train, cfg.train.batch_size, gen)):
            joint_step(task, method, a, b, opts["a"], opts["b"], batch, epoch=(epoch - 1) + i / n_batches,
                       update_b=epoch <= cfg.model_b_epochs())
        val = evaluate(task, models, data.val)
        for m in models:
            if val[f"metric.{m}.miou.val"] > best[m][0]:
                best[m] = (val[f"metric.{m}.miou.val"], copy.deepcopy(models[m].state_dict()), epoch)
    for m in models:
        models[m].load_state_dict(best[m][1])
    task.train_shares = data.info["class_pixel_share"]
    return task, models, {m: best[m][2] for m in models}


def _test_split(args, condition: str, seed: int):
    """A condition's test split (the scenes are keyed by split and index, so a 1-scene train/val
    draw gives the same test split as the full one, for a fraction of the generation)."""
    from projects.mutual.tasks import get_task

    cfg = _config(args, f"condition={condition}", f"seed={seed}", "seg.n_train=1", "seg.n_val=1")
    return get_task("segmentation")(cfg).load_data().test


def _score(args, task, models, seed: int) -> dict[str, dict[str, float]]:
    """Test mIoU / pixel accuracy of both models on every condition's test split, and the floor:
    the training split's majority class predicted everywhere."""
    import torch

    from projects.mutual.joint import evaluate
    from projects.mutual.tasks.segmentation import confusion_counts, corpus_scores

    shares = task.train_shares
    major = max(range(len(shares)), key=shares.__getitem__)
    out = {}
    for condition in args.conditions:
        split = _test_split(args, condition, seed)
        res = evaluate(task, models, split)
        floor = corpus_scores(confusion_counts(torch.full_like(split.y, major), split.y, task.num_classes,
                                               task.ignore_index))
        out[condition] = {**{f"{m}.{k}": res[f"metric.{m}.{k}.test"] for m in "ab" for k in ("miou", "pixel_accuracy")},
                          **{f"floor.{k}": v for k, v in floor.items()}}
    return out


def _cell(job) -> tuple:
    """One (method, seed): train, score; returns the results and this process's CPU seconds."""
    args, meth, seed = job
    import torch

    torch.set_num_threads(args.threads)
    c = time.process_time()
    task, models, epochs = _train(_config(args, f"method.name={meth}", f"seed={seed}"))
    train_cpu = time.process_time() - c
    c = time.process_time()
    scores = _score(args, task, models, seed)
    return meth, seed, scores, epochs, train_cpu, time.process_time() - c


def _report(args, results: dict, cpu: dict) -> None:
    from analysis.stats import describe, paired_comparison
    from analysis.tables import Footnotes

    names = {"a": f"A ({args.pair[0]})", "b": f"B ({args.pair[1]})"}
    for condition in args.conditions:
        rows = {meth: [results[(meth, s)][condition] for s in range(args.seeds)] for meth in METHODS}
        floor = rows["independent"][0]
        print(f"\n## {condition}: majority-class floor mIoU {floor['floor.miou']:.3f}, pixel acc "
              f"{floor['floor.pixel_accuracy']:.3f}; test mIoU (pixel accuracy), mean ± std over {args.seeds} seeds")
        table = []
        for meth in METHODS:
            cells = []
            for key in ("a.miou", "b.miou", "a.pixel_accuracy", "b.pixel_accuracy"):
                d = describe([r[key] for r in rows[meth]])
                cells.append(f"{d.mean:.3f} ± {d.std:.3f}")
            table.append([meth, *cells])
        print_table(table, ["method", names["a"] + " mIoU", names["b"] + " mIoU", "A pix acc", "B pix acc"])
        table, notes = [], Footnotes()
        for meth in METHODS[1:]:
            for m in "ab":
                p = paired_comparison([r[f"{m}.miou"] for r in rows[meth]],
                                      [r[f"{m}.miou"] for r in rows["independent"]], labels=(meth, "independent"))
                table.append([meth, m, *diff_cells(p, notes, "{:+.3f}")])
        print_table(table, ["vs independent", "model", "d mIoU", "95% CI", "p"], notes)
    print(f"\nCPU seconds: training {cpu['train']:.0f} ({cpu['train'] / len(results):.0f} per pair), "
          f"test splits + scoring {cpu['score']:.0f}; total {sum(cpu.values()) / 60:.1f} CPU-minutes")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--n-train", type=int, default=256)
    p.add_argument("--n-val", type=int, default=64)
    p.add_argument("--n-test", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--width-a", type=int, default=8, help="U-Net base channels")
    p.add_argument("--width-b", type=int, default=16, help="FCN base channels")
    p.add_argument("--conditions", nargs="+", default=list(CONDITIONS))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra override for every cell")
    p.add_argument("--threads", type=int, default=1, help="torch threads per cell")
    p.add_argument("--jobs", type=int, default=1, help="cells trained in parallel processes (CPU is summed over them)")
    args = p.parse_args(argv)
    args.pair = ("unet", "fcn")
    from tracking.env import quiet

    quiet()
    import torch

    torch.set_num_threads(args.threads)
    cfg0 = _config(args)
    args.pair = (cfg0.model_a.name, cfg0.model_b.name)
    print(f"mutual_segmentation bench: {time.strftime('%Y-%m-%d %H:%M')} UTC, shapes {cfg0.seg.image_size}px "
          f"(resolution_shift tests at {cfg0.seg.shift_image_size}), {args.n_train} train / {args.n_val} val / "
          f"{args.n_test} test scenes, {args.pair[0]} (width {args.width_a}) vs {args.pair[1]} (width {args.width_b}), "
          f"{args.epochs} epochs, batch {args.batch_size}, Adam lr {args.lr}, {args.seeds} seeds, {args.jobs} job(s) x "
          f"{args.threads} thread(s); "
          f"2-core machine shared with other agents (1-min load {os.getloadavg()[0]:.1f})")
    results, cpu = {}, {"train": 0.0, "score": 0.0}
    jobs = [(args, meth, seed) for seed in range(args.seeds) for meth in METHODS]
    if args.jobs > 1:
        import multiprocessing as mp

        pool = mp.get_context("spawn").Pool(args.jobs)
        cells = pool.imap_unordered(_cell, jobs)
    else:
        pool, cells = None, map(_cell, jobs)
    for meth, seed, scores, epochs, train_cpu, score_cpu in cells:
        results[(meth, seed)] = scores
        cpu["train"] += train_cpu
        cpu["score"] += score_cpu
        clean = scores[args.conditions[0]]
        print(f"  seed {seed} {meth:<11} best epochs a={epochs['a']} b={epochs['b']}  {args.conditions[0]} mIoU "
              f"a={clean['a.miou']:.3f} b={clean['b.miou']:.3f}  ({train_cpu:.0f} + {score_cpu:.0f} CPU s)",
              file=sys.stderr, flush=True)
    if pool is not None:
        pool.close()
        pool.join()
    _report(args, results, cpu)


if __name__ == "__main__":
    main()
