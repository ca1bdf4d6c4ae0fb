"""Which folders a run reads, and anomalib ``Folder`` datamodules over them.

Resolved before the run starts, so a wrong path or domain exits 2 with what exists instead
of failing inside Lightning: training and validation use the source category's normal images
only (a ``val_ratio`` split of train/good); testing uses the target category's test/good and
test/<defect> images with their masks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from projects.anomaly.config import Config
from projects.anomaly.data.mvtec import SOURCES, Category, GenerateSpec, generate, open_category


@dataclass
class DataPlan:
    source: Category
    target: Category
    anomaly_sources: Path | None
    """Texture images for DRAEM's synthetic anomalies (the generated ones), if any."""

    @property
    def cross_domain(self) -> bool:
        return self.source.name != self.target.name


def _category_name(root: Path, domain: str, generated: bool) -> str:
    if generated and not domain.startswith("domain_"):
        return f"domain_{domain}"
    return domain


def plan(cfg: Config) -> DataPlan:
    """The folders this config reads (generating the texture set once if needed).

    Raises ValueError with a one-line reason; the caller turns it into exit 2."""
    generated = cfg.data.root is None
    if generated:
        g = cfg.data.generated
        domains = tuple(sorted({d.removeprefix("domain_") for d in
                                (cfg.data.source_domain, cfg.data.target_domain or cfg.data.source_domain)}))
        unknown = [d for d in domains if d not in ("A", "B", "C", "D")]
        if unknown:
            raise ValueError(f"unknown generated domain {unknown[0]!r}; the generated set has domains A, B, C, D "
                             f"(or give data.root, an MVTec-AD-style folder)")
        root = generate(Path(cfg.data.cache_dir).resolve(), GenerateSpec(domains=("A", "B", "C", "D"), size=g.size,
                                                              n_train=g.n_train, n_test_good=g.n_test_good,
                                                              n_per_defect=g.n_per_defect, seed=g.seed,
                                                              defect_set=g.defect_set))
    else:
        root = Path(cfg.data.root).expanduser().resolve()
    source = open_category(root, _category_name(root, cfg.data.source_domain, generated))
    target_name = cfg.data.target_domain or cfg.data.source_domain
    target = open_category(root, _category_name(root, target_name, generated))
    sources = root / SOURCES if (root / SOURCES).is_dir() else None
    return DataPlan(source, target, sources)


def folder(category: Category, cfg: Config) -> Any:
    """anomalib's ``Folder`` over one category: validation is held out of train/good."""
    from anomalib.data import Folder

    return Folder(name=category.name, **category.folder_kwargs(), train_batch_size=cfg.data.batch_size,
                  eval_batch_size=cfg.data.batch_size, num_workers=cfg.data.num_workers,
                  val_split_mode="from_train", val_split_ratio=cfg.data.val_ratio, seed=cfg.seed)
