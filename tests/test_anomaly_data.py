"""The generated texture set: MVTec AD layout, exact masks, deterministic, cached."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from projects.anomaly.data.mvtec import MARKER, GenerateSpec, generate, open_category
from projects.anomaly.data.textures import DEFECTS, DOMAINS, defective_image, normal_image

SMALL = GenerateSpec(domains=("A", "C"), size=32, n_train=3, n_test_good=2, n_per_defect=2, seed=1)


def test_layout_is_mvtec_ad_with_a_mask_per_defective_image(tmp_path):
    root = generate(tmp_path, SMALL)
    for domain in SMALL.domains:
        cat = root / f"domain_{domain}"
        assert len(list((cat / "train" / "good").glob("*.png"))) == 3
        assert len(list((cat / "test" / "good").glob("*.png"))) == 2
        for defect in DEFECTS:
            images = sorted((cat / "test" / defect).glob("*.png"))
            masks = sorted((cat / "ground_truth" / defect).glob("*_mask.png"))
            assert [p.stem for p in images] == [p.stem.removesuffix("_mask") for p in masks]
            for m in masks:
                mask = np.asarray(Image.open(m))
                assert mask.shape == (32, 32) and set(np.unique(mask)) == {0, 255}
        assert not (cat / "ground_truth" / "good").exists()
    assert (root / MARKER).exists() and len(list((root / "anomaly_sources").glob("*.png"))) > 0


def test_generation_is_deterministic_and_cached(tmp_path):
    a = generate(tmp_path / "a", SMALL)
    b = generate(tmp_path / "b", SMALL)
    for rel in ("domain_A/train/good/000.png", "domain_C/test/blob/001.png",
                "domain_C/ground_truth/scratch/000_mask.png"):
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    stamp = (a / MARKER).stat().st_mtime_ns
    assert generate(tmp_path / "a", SMALL) == a and (a / MARKER).stat().st_mtime_ns == stamp
    other = generate(tmp_path / "a", GenerateSpec(domains=("A", "C"), size=32, n_train=4, n_test_good=2,
                                                  n_per_defect=2, seed=1))
    assert other != a  # different settings never reuse a stale set


@pytest.mark.parametrize("defect", DEFECTS)
def test_a_defect_changes_exactly_the_masked_pixels(defect):
    clean = normal_image("B", np.random.default_rng(3), 64)
    img, mask = defective_image("B", defect, np.random.default_rng(3), 64)
    assert 0 < mask.mean() < 0.2
    changed = np.abs(img - clean).max(-1) > 1e-6
    assert not changed[~mask].any()  # outside the mask: the very same texture
    assert changed[mask].mean() > 0.9


def test_domains_differ_from_each_other():
    means = [normal_image(d, np.random.default_rng(0), 64).mean((0, 1)) for d in DOMAINS]
    assert min(np.abs(a - b).sum() for i, a in enumerate(means) for b in means[i + 1:]) > 0.02


def test_open_category_says_what_is_there(tmp_path):
    root = generate(tmp_path, SMALL)
    cat = open_category(root, "domain_A")
    assert cat.defects == tuple(sorted(DEFECTS))
    kwargs = cat.folder_kwargs()
    assert kwargs["normal_dir"] == "train/good" and len(kwargs["mask_dir"]) == len(DEFECTS)
    with pytest.raises(ValueError, match="no category 'domain_B'.*found: domain_A, domain_C"):
        open_category(root, "domain_B")
    with pytest.raises(ValueError, match="is not a folder"):
        open_category(tmp_path / "nope", "domain_A")
