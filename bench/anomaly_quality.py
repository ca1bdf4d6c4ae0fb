"""Anomaly-detection quality on the generated textures: every model, every domain, 3 seeds.

For each model type and generated domain (A-D) this fits on the domain's normal images and
tests on its normal + defective ones, with the task's own factory, data module, validation
loss and early stopping (anomalib's ``Engine``, no tracking store: this measures the models,
not the platform). It prints image and pixel AUROC mean ± std over seeds and the train/test
time, beside two floors:

- a per-pixel Gaussian of the normal training images (pixel score: the largest |z| over the
  colour channels, blurred; image score: the map's maximum), deterministic;
- random scores, whose AUROC is 0.5 in expectation.

Backbones are randomly initialised (nothing is downloaded), so these are not the published
MVTec numbers; Dinomaly needs local DINOv2 weights and is reported disabled without them.

    python bench/anomaly_quality.py                                  # default, ~15 CPU-min budget
    python bench/anomaly_quality.py --models patchcore padim --domains A B --seeds 1
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


def gaussian_floor(category, image_size: int) -> tuple[float, float]:
    """Image and pixel AUROC of a per-pixel Gaussian model of the normal training images."""
    import numpy as np
    from PIL import Image
    from scipy.ndimage import gaussian_filter
    from sklearn.metrics import roc_auc_score

    def load(path: Path, mask: bool = False):
        img = Image.open(path).convert("L" if mask else "RGB").resize((image_size, image_size))
        return np.asarray(img, dtype=np.float32) / 255.0

    root = category.path
    train = np.stack([load(p) for p in sorted((root / "train" / "good").glob("*.png"))])
    mu, sd = train.mean(0), train.std(0) + 0.02
    labels, scores, pix_true, pix_score = [], [], [], []
    for folder in sorted((root / "test").iterdir()):
        for p in sorted(folder.glob("*.png")):
            z = gaussian_filter(np.abs((load(p) - mu) / sd).max(-1), 2)
            labels.append(int(folder.name != "good"))
            scores.append(float(z.max()))
            mpath = root / "ground_truth" / folder.name / f"{p.stem}_mask.png"
            m = load(mpath, True) > 0.5 if mpath.exists() else np.zeros_like(z, bool)
            pix_true.append(m.ravel())
            pix_score.append(z.ravel())
    return (float(roc_auc_score(labels, scores)),
            float(roc_auc_score(np.concatenate(pix_true), np.concatenate(pix_score))))


def fit_and_test(cfg, data, root_dir: Path) -> dict:
    """One model on one domain: the task's own pieces, Lightning's logger off."""
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
                                          aupro=False))
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
    scores = engine.test(model=model, datamodule=dm, verbose=False)[0]
    return {"image": scores["image_AUROC"], "pixel": scores["pixel_AUROC"], "train_s": train_s,
            "test_s": time.time() - t0, "epochs": engine.trainer.current_epoch}


def _ms(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--domains", nargs="+", default=["A", "B", "C", "D"], choices=["A", "B", "C", "D"])
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
    print(f"generated textures, default config (128 px written, 64 px seen), {args.seeds} seeds, "
          f"trained models up to {args.epochs} epochs, {args.threads} threads; overrides: "
          f"{' '.join(BENCH_SETS + args.set)}", flush=True)
    runs, disabled = grid(args, work, t_start)
    report(rows_with_floors(args, work, runs, disabled), time.time() - t_start)


def grid(args: argparse.Namespace, work: Path, t_start: float) -> tuple[dict, dict]:
    """Seeds outermost: a --minutes cut leaves every model and domain with fewer seeds, not
    some models or domains with none."""
    from projects.anomaly.config import Config
    from projects.anomaly.datamodule import plan
    from projects.anomaly.factory import spec_for
    from tracking import resolve_config

    runs: dict[tuple[str, str], list[dict]] = {}
    disabled: dict[tuple[str, str], str] = {}
    for seed in range(args.seeds):
        for domain in args.domains:
            for name in args.models:
                if args.minutes and time.time() - t_start > 60 * args.minutes:
                    print(f"  --minutes {args.minutes} reached: {name} {domain} seed {seed} skipped", flush=True)
                    continue
                sets = BENCH_SETS + args.set + [f"model.model_type={name}", f"data.source_domain={domain}",
                                               f"train.max_epochs={args.epochs}", f"seed={seed}",
                                               f"data.cache_dir={work / 'data'}"]
                if name == "dinomaly":
                    sets.append("data.image_size=56")
                cfg = resolve_config(Config, "default", sets)
                blocked = spec_for(cfg).unavailable(cfg.model.params())
                if blocked:
                    disabled[(name, domain)] = blocked[0]
                    continue
                r = fit_and_test(cfg, plan(cfg), work / "anomalib")
                runs.setdefault((name, domain), []).append(r)
                print(f"  {name:<9} {domain} seed {seed}: image {r['image']:.3f} pixel {r['pixel']:.3f} "
                      f"({r['epochs']} ep, train {r['train_s']:.1f} s, test {r['test_s']:.1f} s)", flush=True)
    return runs, disabled


def rows_with_floors(args: argparse.Namespace, work: Path, runs: dict, disabled: dict) -> list[dict]:
    from projects.anomaly.config import Config
    from projects.anomaly.datamodule import plan
    from tracking import resolve_config

    rows = []
    for domain in args.domains:
        for name in args.models:
            if (name, domain) in disabled:
                rows.append({"model": name, "domain": domain, "disabled": disabled[(name, domain)]})
            elif (name, domain) in runs:
                rows.append({"model": name, "domain": domain, "runs": runs[(name, domain)]})
        cfg = resolve_config(Config, "default", [f"data.source_domain={domain}", f"data.cache_dir={work / 'data'}"])
        img_f, pix_f = gaussian_floor(plan(cfg).source, cfg.data.image_size)
        rows.append({"model": "floor:gaussian", "domain": domain,
                     "runs": [{"image": img_f, "pixel": pix_f, "train_s": 0, "test_s": 0}]})
    return rows


def report(rows: list[dict], wall_s: float) -> None:
    print(f"\nimage / pixel AUROC, mean ± std over seeds (random-score floor: 0.500 / 0.500); "
          f"wall {wall_s / 60:.1f} min")
    print(f"{'model':<15} {'domain':<6} {'image AUROC':>15} {'pixel AUROC':>15} {'n':>3} {'train s':>8} {'test s':>7}")
    by_model: dict[str, list[float]] = {}
    for r in rows:
        if "disabled" in r:
            print(f"{r['model']:<15} {r['domain']:<6} disabled: {r['disabled'][:90]}...")
            continue
        img = [x["image"] for x in r["runs"]]
        pix = [x["pixel"] for x in r["runs"]]
        by_model.setdefault(r["model"], []).extend(img)
        print(f"{r['model']:<15} {r['domain']:<6} {_ms(img):>15} {_ms(pix):>15} {len(img):>3} "
              f"{statistics.mean(x['train_s'] for x in r['runs']):>8.1f} "
              f"{statistics.mean(x['test_s'] for x in r['runs']):>7.1f}")
    print("\nmean image AUROC over domains and seeds:")
    for name, vals in by_model.items():
        verdict = "reaches 0.9" if statistics.mean(vals) >= 0.9 else "below 0.9"
        print(f"  {name:<15} {statistics.mean(vals):.3f}  ({verdict}; min {min(vals):.3f})")


if __name__ == "__main__":
    main()
