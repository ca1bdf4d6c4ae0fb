"""The generated texture set: MVTec AD layout, exact masks, deterministic, cached."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from projects.anomaly.data.floor import chance_bound, gaussian_floor
from projects.anomaly.data.mvtec import MARKER, SEVERITY_FILE, GenerateSpec, generate, open_category
from projects.anomaly.data.subtle import APPLIES, MIN_CHANGE, SEVERITIES, subtle_image
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


# --------------------------------------------------------------------------- the subtle set

SUBTLE_CASES = [(d, k) for d, kinds in APPLIES.items() for k in kinds]


@pytest.mark.parametrize("domain, defect", SUBTLE_CASES)
@pytest.mark.parametrize("severity", SEVERITIES)
def test_a_subtle_defect_changes_exactly_the_masked_pixels(domain, defect, severity):
    """Outside the mask the very same image (bit for bit); inside, the material really moved:
    at least MIN_CHANGE on average and a grey level or more on a good share of the pixels."""
    for seed in (0, 1):
        clean = normal_image(domain, np.random.default_rng(seed), 64)
        img, mask = subtle_image(domain, defect, np.random.default_rng(seed), 64, severity)
        assert 0 < mask.mean() < 0.1
        changed = np.abs(img - clean).max(-1)
        assert not (changed[~mask] > 0).any()
        assert changed[mask].mean() > MIN_CHANGE / 2  # light (<= 1) scales the material's change
        assert (changed[mask] >= 1 / 255).mean() > 0.25


def test_a_subtle_defect_needs_a_domain_where_it_shows():
    with pytest.raises(ValueError, match="does not apply to domain 'D'.*D has sharpen, chroma"):
        subtle_image("D", "rotated", np.random.default_rng(0), 32, 1)


def test_subtle_set_is_mvtec_layout_with_severities_and_its_own_cache(tmp_path):
    spec = GenerateSpec(domains=("A", "D"), size=32, n_train=3, n_test_good=2, n_per_defect=2, seed=1,
                        defect_set="subtle")
    root = generate(tmp_path, spec)
    assert root != generate(tmp_path, SMALL) and "subtle" in root.name
    for domain in spec.domains:
        cat = root / f"domain_{domain}"
        counts = spec.defects(domain)
        assert set(counts) == set(APPLIES[domain]) and sum(counts.values()) == 8  # as many as easy's 4 x 2
        cat_obj = open_category(root, f"domain_{domain}")
        assert cat_obj.defects == tuple(sorted(APPLIES[domain]))
        severity = json.loads((cat / SEVERITY_FILE).read_text())
        for defect, n in counts.items():
            stems = [p.stem for p in sorted((cat / "test" / defect).glob("*.png"))]
            assert len(stems) == n
            assert [p.name for p in sorted((cat / "ground_truth" / defect).glob("*.png"))] == \
                [f"{s}_mask.png" for s in stems]
            assert [severity[f"{defect}/{s}"] for s in stems] == list(SEVERITIES * n)[:n]


def test_the_per_pixel_floor_is_near_chance_on_the_subtle_set_only(tmp_path):
    """A property of the generator, not a tuned number: subtle defects keep each pixel's
    distribution, so the per-pixel Gaussian's image AUROC, averaged over the four domains, stays
    under the 3-sigma bound of uninformative scores; on the easy set it is far above it."""
    n_good, n_per = 12, 3
    bound = chance_bound(n_good, 4 * n_per, k=3, sets=4)  # 0.68
    floors = {}
    for defect_set in ("easy", "subtle"):
        spec = GenerateSpec(size=48, n_train=16, n_test_good=n_good, n_per_defect=n_per, defect_set=defect_set)
        root = generate(tmp_path, spec)
        floors[defect_set] = np.mean([gaussian_floor(root / f"domain_{d}", 48)[0] for d in DOMAINS])
    assert floors["subtle"] < bound < floors["easy"], floors
