"""Segmentation data: the shapes generator keeps its promises (masks exact pixel for pixel
against an independent rasteriser, domain-shift textures and palettes really differ, same
geometry in both domains and at both resolutions, determinism by seed), and the read sets
(VOC, Cityscapes, image+mask folders) load from a local root or say in one line how to
provide it."""
from __future__ import annotations

import colorsys

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from projects.mutual.data import DataError
from projects.mutual.data.segmentation import shapes as gen
from projects.mutual.data.segmentation.sources import load_source


def _independent_mask(scene: gen.Scene, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Class map and index of the topmost shape per pixel, from matplotlib's point-in-polygon
    test and the ellipse's quadratic form (not the generator's code paths)."""
    c = (np.arange(size) + 0.5) / size
    pts = np.stack(np.meshgrid(c, c, indexing="xy"), -1).reshape(-1, 2)
    cls, top = np.zeros(size * size, dtype=np.int64), np.full(size * size, -1)
    for i, s in enumerate(scene.shapes):
        if s.kind == 1:
            a, b, t = s.params
            rot = np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
            quad = rot @ np.diag([1 / a ** 2, 1 / b ** 2]) @ rot.T
            d = pts - np.array(s.centre)
            inside = np.einsum("ni,ij,nj->n", d, quad, d) <= 1.0
        else:
            inside = MplPath(gen.polygon(s)).contains_points(pts)
        cls[inside], top[inside] = s.kind, i
    return cls.reshape(size, size), top.reshape(size, size)


@pytest.mark.parametrize("size", [32, 64, 96])
def test_mask_agrees_with_the_drawn_shapes_pixel_for_pixel(size):
    for index in range(12):
        scene = gen.draw_scene(3, "train", index)
        image, mask, background = gen.render(scene, size)
        want, top = _independent_mask(scene, size)
        assert np.array_equal(mask, want), (index, int((mask != want).sum()))
        for i, shape in enumerate(scene.shapes):   # the painted colour is the topmost shape's
            if (top == i).any():
                assert np.allclose(image[:, top == i], gen.shape_colour(shape, "train")[:, None], atol=1e-6)
        assert np.array_equal(image[:, mask == 0], background[:, mask == 0])
    x, y = gen.generate(0, "train", 60, size)
    assert set(np.unique(y)) == {0, 1, 2, 3} and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1


def _hues(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    pix = x.transpose(0, 2, 3, 1)[y > 0]
    return np.array([colorsys.rgb_to_hsv(*p)[0] for p in pix[:: max(1, len(pix) // 3000)]])


def _roughness(x: np.ndarray, y: np.ndarray) -> float:
    """Mean absolute difference between horizontal neighbours, on background pixel pairs."""
    both = (y[:, :, 1:] == 0) & (y[:, :, :-1] == 0)
    diff = np.abs(np.diff(x, axis=3)).mean(1)
    return float(diff[both].mean())


def test_domain_shift_textures_and_palettes_really_differ_with_the_same_geometry():
    n, size = 40, 64
    train_x, train_y = gen.generate(0, "test", n, size)
    shift_x, shift_y = gen.generate(0, "test", n, size, texture_domain="shifted", palette_domain="shifted")
    assert np.array_equal(train_y, shift_y)            # geometry (and masks) unchanged: paired sets
    scenes = [gen.draw_scene(0, "test", i) for i in range(n)]
    fams = {d: {gen.texture(s, size, d)[1] for s in scenes} for d in gen.DOMAINS}
    assert fams["train"] == set(gen.TEXTURES["train"]) and fams["shifted"] == set(gen.TEXTURES["shifted"])
    assert not fams["train"] & fams["shifted"]
    h_train, h_shift = _hues(train_x, train_y), _hues(shift_x, shift_y)
    assert h_train.max() < gen.HUES["train"][1] + 1e-6 and h_shift.min() > gen.HUES["shifted"][0] - 1e-6
    assert h_train.max() < h_shift.min()               # disjoint hue ranges
    assert _roughness(shift_x, shift_y) > 2 * _roughness(train_x, train_y)   # fine vs smooth textures
    tex_only, _ = gen.generate(0, "test", n, size, texture_domain="shifted")
    assert np.allclose(_hues(tex_only, train_y), h_train, atol=1e-5)   # texture shift keeps the palette


def test_generator_is_deterministic_by_seed_and_scene_index():
    a = gen.generate(7, "train", 10, 32)
    b = gen.generate(7, "train", 10, 32)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    longer = gen.generate(7, "train", 15, 32)
    assert np.array_equal(longer[0][:10], a[0]) and np.array_equal(longer[1][:10], a[1])
    other_seed, other_split = gen.generate(8, "train", 10, 32), gen.generate(7, "val", 10, 32)
    assert not np.array_equal(other_seed[1], a[1]) and not np.array_equal(other_split[1], a[1])


def test_the_same_scenes_render_at_the_shifted_resolution():
    """resolution_shift re-renders the test scenes: the class shares agree to within the
    rasterisation error, and each scene's shape count is the same."""
    _, small = gen.generate(0, "test", 30, 64)
    _, large = gen.generate(0, "test", 30, 96)
    for s, l in zip(small, large):
        share = lambda m: np.bincount(m.ravel(), minlength=4) / m.size  # noqa: E731
        assert np.abs(share(s) - share(l)).max() < 0.03


# ---------------------------------------------------------------------------------- read sets
@pytest.mark.parametrize("dataset, expected", [
    ("voc", "VOCdevkit/VOC2012"), ("cityscapes", "leftImg8bit"), ("segfolder", "<path>/images")])
def test_a_missing_root_is_one_line_saying_how_to_provide_it(tmp_path, dataset, expected):
    for path in (None, str(tmp_path / "nowhere")):
        with pytest.raises(DataError) as exc:
            load_source(dataset, path)
        msg = str(exc.value)
        assert "\n" not in msg and expected in msg and "--set data.path=" in msg and "nothing is downloaded" in msg


def _png(path, array, mode):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode if mode != "P" else "L")
    if mode == "P":
        im = im.convert("P")
        im.putpalette([v for i in range(256) for v in (i, i, i)])
        im.putdata(list(np.asarray(array, dtype=np.uint8).ravel()))
    im.save(path)


def _fake_voc(root):
    base = root / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(0)
    for split, ids in (("train", ["a1", "a2", "a3", "a4"]), ("val", ["b1", "b2"])):
        for i in ids:
            _png(base / "JPEGImages" / f"{i}.png", rng.integers(0, 255, (20, 30, 3)), "RGB")
            mask = np.zeros((20, 30), dtype=np.uint8)
            mask[5:15, 5:20], mask[4, :], mask[:, 21] = 15, 255, 255   # a person, void borders
            _png(base / "SegmentationClass" / f"{i}.png", mask, "P")
        (base / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (base / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids))
    for p in base.glob("JPEGImages/*.png"):   # VOC's images are JPEGs
        from PIL import Image

        Image.open(p).convert("RGB").save(p.with_suffix(".jpg"))
    return root


def test_voc_and_cityscapes_layouts_load_with_void_kept(tmp_path):
    voc = load_source("voc", str(_fake_voc(tmp_path / "voc")))
    assert voc.num_classes == 21 and len(voc.train_images) == 4 and len(voc.test_images) == 2
    assert set(np.unique(voc.train_masks[0])) == {0, 15, 255}
    root = tmp_path / "cs"
    for split in ("train", "val"):
        _png(root / "leftImg8bit" / split / "aachen" / f"aachen_0_{split}_leftImg8bit.png",
             np.full((8, 16, 3), 90), "RGB")
        ids = np.array([[7, 26, 0, 24]] * 8).repeat(4, axis=1)   # road, car, unlabeled, person
        _png(root / "gtFine" / split / "aachen" / f"aachen_0_{split}_gtFine_labelIds.png", ids, "L")
    cs = load_source("cityscapes", str(root))
    assert cs.num_classes == 19 and cs.class_names[0] == "road" and cs.class_names[13] == "car"
    assert [int(v) for v in cs.train_masks[0][0, ::4]] == [0, 13, 255, 11]


def test_segfolder_splits_and_resolution_shift_through_the_loader(tmp_path):
    from projects.mutual.config import Config
    from projects.mutual.data.segmentation.loader import load_segmentation
    from tracking import resolve_config

    rng = np.random.default_rng(1)
    for split, n in (("train", 12), ("test", 4)):
        for i in range(n):
            _png(tmp_path / split / "images" / f"{i}.png", rng.integers(0, 255, (24, 24, 3)), "RGB")
            _png(tmp_path / split / "masks" / f"{i}.png", rng.integers(0, 3, (24, 24)), "L")
    cfg = resolve_config(Config, "segmentation_quick", ["data.dataset=segfolder", f"data.path={tmp_path}",
                                                        "condition=resolution_shift", "seg.image_size=16",
                                                        "seg.shift_image_size=24", "data.val_fraction=0.25"])
    data = load_segmentation("segfolder", cfg.seg, cfg.perturbation, cfg.data, path=cfg.data.path)
    assert data.num_classes == 3 and (len(data.train), len(data.val), len(data.test)) == (9, 3, 4)
    assert data.test.x.shape[-2:] == (24, 24) and data.extra["test_clean"].x.shape[-2:] == (16, 16)
    assert data.train.y.dtype.is_floating_point is False and int(data.train.y.max()) <= 2
    bad = tmp_path / "bad"
    _png(bad / "images" / "0.png", np.zeros((4, 4, 3)), "RGB")
    _png(bad / "masks" / "0.png", np.full((4, 4), 7), "L")
    _png(bad / "images" / "1.png", np.zeros((4, 4, 3)), "RGB")
    _png(bad / "masks" / "1.png", np.full((4, 4), 1), "L")
    with pytest.raises(DataError, match="mask values \\[7\\] are >= the 3 classes"):
        load_source("segfolder", str(bad), num_classes=3)
