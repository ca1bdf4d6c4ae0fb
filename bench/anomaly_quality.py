"""Anomaly-detection quality on the generated textures: every model, every domain, 3 seeds.

For each defect set (``--defects easy|subtle|both``), model type and generated domain (A-D)
this fits on the domain's normal images and tests on its normal + defective ones, with the
task's own factory, data module, validation loss and early stopping (anomalib's ``Engine``, no
tracking store: this measures the models, not the platform). It prints image AUROC, pixel
AUROC and pixel AUPRO mean ± std over seeds and the train/test time, beside two floors:

- a per-pixel Gaussian of the normal training images (pixel score: the largest |z| over the
  colour channels, blurred; image score: the map's maximum), deterministic;
- random scores, whose AUROC is 0.5 in expectation.

The cross-domain table (``--cross A``, the default): each model trained on domain A is also
tested on the other domains given, and so is the floor fitted on A.

Backbones are randomly initialised (nothing is downloaded), so these are not the published
MVTec numbers; Dinomaly runs with ``model.dinomaly.encoder_init=random`` (the DINOv2
architecture with random weights, not the published encoder) unless ``--set
model.dinomaly.weights=FILE`` gives the real one.

    python bench/anomaly_quality.py --defects both                   # default scale, both sets
    python bench/anomaly_quality.py --models patchcore padim --domains A B --seeds 1 --defects subtle
    python bench/anomaly_quality.py --epochs 20 --set model.draem.base_width=128

Prints figures; asserts nothing. Times depend on the machine's load: say so beside them.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

MODELS = ("patchcore", "padim", "fastflow", "draem", "dinomaly")
# CPU-scale settings: small coreset, a narrow DRAEM, a few epochs for the trained models.
BENCH_SETS = ["model.patchcore.coreset_sampling_ratio=0.02", "model.draem.base_width=16",
              "model.draem.disc_base_width=16", "model.fastflow.flow_steps=4"]


def fit_and_test(cfg, data, root_dir: Path, targets: tuple = (), aupro: bool = True) -> dict:
    """One model on one domain (and, trained once, on each of ``targets``): the task's own
    pieces, Lightning's logger off."""
    import lightning.pytorch as pl
    from anomalib.callbacks import ModelCheckpoint
    from anomalib.engine import Engine
    from lightning.pytorch.callbacks import EarlyStopping

    from projects.anomaly.datamodule import folder
    from projects.anomaly.factory import BuildContext, build_model, spec_for
    from projects.anomaly.validation import VAL_LOSS_KEY, validation_loss_callback

    pl.seed_everything(cfg.seed, verbose=False)
    spec = spec_for(cfg)
    model = build_model(cfg, BuildContext(cfg.data.image_size, cfg.train.learning_rate, data.anomaly_sources,
                                          aupro=aupro))
    callbacks = [ModelCheckpoint(save_top_k=0, save_last=False)]
    if spec.validation_loss() is not None:
        callbacks += [validation_loss_callback(spec.validation_loss()),
                      EarlyStopping(VAL_LOSS_KEY, patience=cfg.train.early_stopping_patience)]
    engine = Engine(accelerator="cpu", devices=1, max_epochs=1 if spec.memory_bank else cfg.train.max_epochs,
                    logger=False, callbacks=callbacks, default_root_dir=root_dir,
                    enable_progress_bar=False, enable_model_summary=False)
    dm = folder(data.source, cfg)
    t0 = time.time()
    engine.fit(model=model, datamodule=dm)
    train_s = time.time() - t0
    t0 = time.time()
    result = {**_scores(engine.test(model=model, datamodule=dm, verbose=False)[0]), "train_s": train_s,
              "test_s": time.time() - t0, "epochs": engine.trainer.current_epoch}
    result["cross"] = {t.name: _scores(engine.test(model=model, datamodule=folder(t, cfg), verbose=False)[0])
                       for t in targets}
    return result


def _scores(scores: dict) -> dict:
    return {"image": scores["image_AUROC"], "pixel": scores["pixel_AUROC"],
            "aupro": scores.get("pixel_AUPRO", float("nan"))}


def _ms(values: list[float]) -> str:
    values = [v for v in values if v == v]  # NaN: not measured
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--domains", nargs="+", default=["A", "B", "C", "D"], choices=["A", "B", "C", "D"])
    ap.add_argument("--defects", default="both", choices=["easy", "subtle", "both"])
    ap.add_argument("--cross", default="A", help="source domain of the cross-domain table ('' for none): "
                                                 "its models are also tested on the other --domains")
    ap.add_argument("--no-aupro", action="store_true", help="skip pixel AUPRO (slow on the CPU)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2, help="max epochs of the trained models (early stopping may end sooner)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=0,
                    help="wall-time budget: later runs are skipped (and said so) once it is spent; 0: none")
    ap.add_argument("--set", action="append", default=[], help="extra task override, e.g. model.draem.base_width=64")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import logging

    import torch

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("anomalib").setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="anomaly-bench-"))
    t_start = time.time()
    print(f"generated textures, default config (128 px written, 64 px seen; dinomaly 56 px), {args.seeds} seeds, "
          f"trained models up to {args.epochs} epochs, {args.threads} threads, load {_load()}; overrides: "
          f"{' '.join(BENCH_SETS + args.set)}", flush=True)
    for defect_set in (["easy", "subtle"] if args.defects == "both" else [args.defects]):
        print(f"\n=== defect set: {defect_set} ===", flush=True)
        runs, disabled = grid(args, work, t_start, defect_set)
        report(rows_with_floors(args, work, runs, disabled, defect_set), time.time() - t_start)
        cross_report(args, work, runs, defect_set)
    print(f"\nload average at the end: {_load()}")


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _cfg(args: argparse.Namespace, work: Path, defect_set: str, *sets: str):
    from projects.anomaly.config import Config
    from tracking import resolve_config

    return resolve_config(Config, "default", BENCH_SETS + args.set + [
        f"data.cache_dir={work / 'data'}", f"data.generated.defect_set={defect_set}", *sets])


def grid(args: argparse.Namespace, work: Path, t_start: float, defect_set: str) -> tuple[dict, dict]:
    """Seeds outermost: a --minutes cut leaves every model and domain with fewer seeds, not
    some models or domains with none."""
    from projects.anomaly.data.mvtec import open_category
    from projects.anomaly.datamodule import plan
    from projects.anomaly.factory import spec_for

    runs: dict[tuple[str, str], list[dict]] = {}
    disabled: dict[tuple[str, str], str] = {}
    for seed in range(args.seeds):
        for domain in args.domains:
            for name in args.models:
                if args.minutes and time.time() - t_start > 60 * args.minutes:
                    print(f"  --minutes {args.minutes} reached: {name} {domain} seed {seed} skipped", flush=True)
                    continue
                sets = [f"model.model_type={name}", f"data.source_domain={domain}",
                        f"train.max_epochs={args.epochs}", f"seed={seed}"]
                if name == "dinomaly":
                    sets.append("data.image_size=56")
                    if not any(s.startswith("model.dinomaly.weights=") for s in args.set):
                        sets.append("model.dinomaly.encoder_init=random")
                cfg = _cfg(args, work, defect_set, *sets)
                blocked = spec_for(cfg).unavailable(cfg.model.params())
                if blocked:
                    disabled[(name, domain)] = blocked[0]
                    continue
                data = plan(cfg)
                targets = tuple(open_category(data.source.root, f"domain_{d}") for d in args.domains
                                if domain == args.cross and d != domain)
                r = fit_and_test(cfg, data, work / "anomalib", targets, aupro=not args.no_aupro)
                runs.setdefault((name, domain), []).append(r)
                print(f"  {name:<9} {domain} seed {seed}: image {r['image']:.3f} pixel {r['pixel']:.3f} "
                      f"aupro {r['aupro']:.3f} ({r['epochs']} ep, train {r['train_s']:.1f} s, "
                      f"test {r['test_s']:.1f} s; load {_load()})", flush=True)
    return runs, disabled


def rows_with_floors(args: argparse.Namespace, work: Path, runs: dict, disabled: dict, defect_set: str) -> list[dict]:
    from projects.anomaly.data.floor import gaussian_floor
    from projects.anomaly.datamodule import plan

    rows = []
    for domain in args.domains:
        for name in args.models:
            if (name, domain) in disabled:
                rows.append({"model": name, "domain": domain, "disabled": disabled[(name, domain)]})
            elif (name, domain) in runs:
                rows.append({"model": name, "domain": domain, "runs": runs[(name, domain)]})
        cfg = _cfg(args, work, defect_set, f"data.source_domain={domain}")
        img_f, pix_f = gaussian_floor(plan(cfg).source.path, cfg.data.image_size)
        rows.append({"model": "floor:gaussian", "domain": domain,
                     "runs": [{"image": img_f, "pixel": pix_f, "aupro": float("nan"), "train_s": 0, "test_s": 0}]})
    return rows


def cross_report(args: argparse.Namespace, work: Path, runs: dict, defect_set: str) -> None:
    """Image AUROC of the models trained on --cross, tested on each other domain."""
    from projects.anomaly.data.floor import gaussian_floor
    from projects.anomaly.datamodule import plan

    targets = [d for d in args.domains if d != args.cross]
    if not args.cross or not targets or args.cross not in args.domains:
        return
    print(f"\ncross-domain ({defect_set}): trained on {args.cross}, image AUROC on each test domain "
          f"(in-domain column for reference)")
    print(f"{'model':<15} {args.cross + ' (in)':>15} " + " ".join(f"{t:>15}" for t in targets))
    for name in args.models:
        rs = runs.get((name, args.cross), [])
        if not rs:
            continue
        cells = [_ms([r["image"] for r in rs])] + [_ms([r["cross"][f"domain_{t}"]["image"] for r in rs])
                                                   for t in targets]
        print(f"{name:<15} " + " ".join(f"{c:>15}" for c in cells))
    src = plan(_cfg(args, work, defect_set, f"data.source_domain={args.cross}")).source
    floor = [gaussian_floor(src.path, 64)[0]] + [gaussian_floor(src.root / f"domain_{t}", 64, src.path)[0]
                                                 for t in targets]
    print(f"{'floor:gaussian':<15} " + " ".join(f"{v:>15.3f}" for v in floor))


def report(rows: list[dict], wall_s: float) -> None:
    print(f"\nimage AUROC / pixel AUROC / pixel AUPRO, mean ± std over seeds (random-score floor: "
          f"0.500 / 0.500 / -); wall so far {wall_s / 60:.1f} min, load {_load()}")
    print(f"{'model':<15} {'domain':<6} {'image AUROC':>15} {'pixel AUROC':>15} {'pixel AUPRO':>15} {'n':>3} "
          f"{'train s':>8} {'test s':>7}")
    by_model: dict[str, list[float]] = {}
    for r in rows:
        if "disabled" in r:
            print(f"{r['model']:<15} {r['domain']:<6} disabled: {r['disabled'][:90]}...")
            continue
        img = [x["image"] for x in r["runs"]]
        by_model.setdefault(r["model"], []).extend(img)
        print(f"{r['model']:<15} {r['domain']:<6} {_ms(img):>15} {_ms([x['pixel'] for x in r['runs']]):>15} "
              f"{_ms([x['aupro'] for x in r['runs']]):>15} {len(img):>3} "
              f"{statistics.mean(x['train_s'] for x in r['runs']):>8.1f} "
              f"{statistics.mean(x['test_s'] for x in r['runs']):>7.1f}")
    print("\nmean image AUROC over domains and seeds:")
    for name, vals in by_model.items():
        verdict = "reaches 0.9" if statistics.mean(vals) >= 0.9 else "below 0.9"
        print(f"  {name:<15} {statistics.mean(vals):.3f}  ({verdict}; min {min(vals):.3f})")


if __name__ == "__main__":
    main()
