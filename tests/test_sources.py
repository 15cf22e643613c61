"""The raw readers: CIFAR pixel order against hand-built files in the official format, errors for bad or missing
files (without touching the network), the fixed digits split, and a learnable synthetic set."""

import hashlib
import pickle
import shutil
import socket
import urllib.error
from pathlib import Path

import numpy as np
import pytest
from fake_cifar import CIFAR10_NAMES, _dump, _fake_rows, _pixel_of_row, _tar, _write_cifar10, _write_cifar100

from fastsglr.data.sources import DATASETS, channel_stats, load_raw
from fastsglr.errors import UsageError


def _check_pixels(images: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> None:
    assert images.dtype == np.uint8 and images.shape == (len(rows), 32, 32, 3)
    n, h, w, c = (rng.integers(0, size, 2000) for size in images.shape)
    np.testing.assert_array_equal(images[n, h, w, c], _pixel_of_row(rows, n, h, w, c))


@pytest.fixture
def cifar10(tmp_path):
    return tmp_path, _write_cifar10(tmp_path, np.random.default_rng(1))


@pytest.mark.parametrize("packed", [False, True], ids=["extracted", "tar.gz"])
def test_cifar10_pixel_exact(cifar10, packed):
    root, expected = cifar10
    if packed:
        _tar(root, "cifar-10-batches-py", "cifar-10-python.tar.gz")
        shutil.rmtree(root / "cifar-10-batches-py")
    data = load_raw("cifar10", str(root), download=False)
    rng = np.random.default_rng(2)
    _check_pixels(data.train.images, expected["train_rows"], rng)
    _check_pixels(data.test.images, expected["test_rows"], rng)
    first = data.train.images[0].astype(int)
    assert first[0, 0].tolist() == [255, 0, 0] and first[1, 2].tolist() == [0, 255, 0]
    assert first.sum() == 2 * 255
    for split, labels in ((data.train, expected["train_labels"]), (data.test, expected["test_labels"])):
        assert split.labels.dtype == np.int64
        np.testing.assert_array_equal(split.labels, labels)
    assert data.name == "cifar10" and data.classes == CIFAR10_NAMES and data.superclass is None


def test_cifar10_checksums_name_the_files_read(cifar10):
    root, _ = cifar10
    extracted = load_raw("cifar10", str(root), download=False).source_files
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    assert extracted == {
        f"cifar-10-batches-py/{n}": hashlib.sha256((root / "cifar-10-batches-py" / n).read_bytes()).hexdigest()
        for n in names
    }
    archive = _tar(root, "cifar-10-batches-py", "cifar-10-python.tar.gz")
    other = root / "packed"
    other.mkdir()
    archive = archive.rename(other / archive.name)
    packed = load_raw("cifar10", str(other), download=False).source_files
    assert packed == {"cifar-10-python.tar.gz": hashlib.sha256(archive.read_bytes()).hexdigest()}


@pytest.mark.parametrize("packed", [False, True], ids=["extracted", "tar.gz"])
def test_cifar100_fine_labels_and_superclass(tmp_path, packed):
    expected = _write_cifar100(tmp_path, np.random.default_rng(3))
    root = tmp_path
    if packed:
        root = tmp_path / "packed"
        root.mkdir()
        _tar(tmp_path, "cifar-100-python", "cifar-100-python.tar.gz").rename(root / "cifar-100-python.tar.gz")
    data = load_raw("cifar100", str(root), download=False)
    rng = np.random.default_rng(4)
    _check_pixels(data.train.images, expected["train_rows"], rng)
    _check_pixels(data.test.images, expected["test_rows"], rng)
    np.testing.assert_array_equal(data.train.labels, expected["train_labels"])
    np.testing.assert_array_equal(data.test.labels, expected["test_labels"])
    assert data.superclass.dtype == np.int64
    np.testing.assert_array_equal(data.superclass, expected["superclass"])
    assert data.classes == expected["names"] and data.name == "cifar100"


def test_cifar100_inconsistent_superclass_is_usage_error(tmp_path):
    _write_cifar100(tmp_path, np.random.default_rng(5))
    path = tmp_path / "cifar-100-python" / "test"
    batch = pickle.loads(path.read_bytes(), encoding="bytes")
    batch[b"coarse_labels"] = [(c + 1) % 20 for c in batch[b"coarse_labels"]]
    _dump(path, batch, numpy1=False)
    with pytest.raises(UsageError, match="coarse_labels"):
        load_raw("cifar100", str(tmp_path), download=False)


# -------------------------------------------------------------------------------------------- bad or missing


def test_missing_cifar_names_the_root_and_the_files(tmp_path):
    with pytest.raises(UsageError) as err:
        load_raw("cifar10", str(tmp_path), download=False)
    message = str(err.value)
    assert str(tmp_path) in message and "cifar-10-python.tar.gz" in message and "cifar-10-batches-py" in message
    assert "\n" not in message


def test_cifar_without_root_is_usage_error():
    with pytest.raises(UsageError, match="cifar-100-python.tar.gz"):
        load_raw("cifar100", None, download=False)


def test_unreachable_download_fails_fast_with_where_to_put_files(tmp_path, monkeypatch):
    """The torchvision download is attempted under a short socket timeout, restored afterwards."""
    torchvision = pytest.importorskip("torchvision")
    seen = {}

    def offline(self):
        seen["timeout"] = socket.getdefaulttimeout()
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline)
    before = socket.getdefaulttimeout()
    with pytest.raises(UsageError) as err:
        load_raw("cifar10", str(tmp_path), download=True)
    assert seen["timeout"] is not None and 0 < seen["timeout"] <= 10
    assert socket.getdefaulttimeout() == before
    message = str(err.value)
    assert str(tmp_path) in message and "cifar-10-python.tar.gz" in message and "name resolution" in message
    assert "\n" not in message


def test_download_is_used_when_files_are_absent(tmp_path, monkeypatch):
    """Whatever the download leaves in root is then read like any local copy."""
    torchvision = pytest.importorskip("torchvision")
    calls = []

    def fake_cifar10(root, train, download):
        calls.append((root, download))
        _write_cifar10(Path(root), np.random.default_rng(6))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_cifar10)
    data = load_raw("cifar10", str(tmp_path))
    assert calls == [(str(tmp_path), True)]
    assert data.train.images.shape == (35, 32, 32, 3)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_archive_is_usage_error(cifar10, damage):
    root, _ = cifar10
    archive = _tar(root, "cifar-10-batches-py", "cifar-10-python.tar.gz")
    packed = root / "packed"
    packed.mkdir()
    good = archive.read_bytes()
    bad = np.random.default_rng(7).bytes(5000) if damage == "garbage" else good[: len(good) // 2]
    (packed / archive.name).write_bytes(bad)
    with pytest.raises(UsageError, match="cifar-10-python.tar.gz"):
        load_raw("cifar10", str(packed), download=False)


def test_archive_without_the_release_is_usage_error(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "readme.txt").write_text("not cifar")
    _tar(tmp_path, "other", "cifar-10-python.tar.gz")
    with pytest.raises(UsageError, match="data_batch_1"):
        load_raw("cifar10", str(tmp_path), download=False)


def test_missing_batch_in_extracted_folder_names_it(cifar10):
    root, _ = cifar10
    (root / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(UsageError, match="data_batch_4"):
        load_raw("cifar10", str(root), download=False)


class _Touch:
    """A pickle that, if unpickled naively, would create a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.mark.parametrize("content", ["garbage", "truncated", "wrong_shape", "no_dict", "code"])
def test_corrupt_pickle_is_usage_error_naming_it(cifar10, content):
    root, _ = cifar10
    path = root / "cifar-10-batches-py" / "data_batch_3"
    marker = root / "code_ran"
    good = path.read_bytes()
    bad = {
        "garbage": lambda: np.random.default_rng(8).bytes(300),
        "truncated": lambda: good[: len(good) // 2],
        "wrong_shape": lambda: pickle.dumps({b"data": np.full((7, 100), 3, np.uint8), b"labels": [1] * 7}, protocol=2),
        "no_dict": lambda: pickle.dumps([1, 2, 3], protocol=2),
        "code": lambda: pickle.dumps({b"data": _Touch(marker), b"labels": [1]}, protocol=2),
    }[content]()
    path.write_bytes(bad)
    with pytest.raises(UsageError, match="data_batch_3") as err:
        load_raw("cifar10", str(root), download=False)
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_labels_out_of_range_are_usage_error(cifar10):
    root, _ = cifar10
    path = root / "cifar-10-batches-py" / "test_batch"
    rows = _fake_rows(np.random.default_rng(9), 6)
    _dump(path, {b"data": rows, b"labels": [0, 1, 2, 3, 4, 10]})
    with pytest.raises(UsageError, match="test_batch"):
        load_raw("cifar10", str(root), download=False)


def test_unknown_dataset_lists_choices():
    with pytest.raises(UsageError, match="cifar10, cifar100, digits, synthetic"):
        load_raw("mnist")


# ------------------------------------------------------------------------------------------------- digits


def test_digits_real_scaled_and_split_fixed():
    from sklearn.datasets import load_digits

    original = load_digits()
    a = load_raw("digits", seed=0)
    b = load_raw("digits", seed=123)
    assert len(a.train.labels) + len(a.test.labels) == 1797 and len(a.test.labels) == 450
    for split in (a.train, a.test):
        assert split.images.dtype == np.uint8 and split.images.shape[1:] == (8, 8, 1)
        assert split.labels.dtype == np.int64
    assert a.train.images.max() == 255 and a.test.images.min() == 0
    np.testing.assert_array_equal(a.train.images, b.train.images)
    np.testing.assert_array_equal(a.test.labels, b.test.labels)
    assert a.classes == [str(d) for d in range(10)] and a.superclass is None

    # every image is an original one, scaled 0..16 -> 0..255, and together the splits are the whole set
    scaled = np.rint(original.images * 255 / 16).astype(np.uint8).reshape(1797, -1)
    lookup = {(row.tobytes(), int(y)) for row, y in zip(scaled, original.target)}
    ours = [(img.reshape(-1).tobytes(), int(y)) for s in (a.train, a.test) for img, y in zip(s.images, s.labels)]
    assert all(item in lookup for item in ours)
    np.testing.assert_array_equal(
        np.bincount(np.concatenate([a.train.labels, a.test.labels])), np.bincount(original.target)
    )

    # stratified: each class is split 3:1 up to rounding
    per_class = np.bincount(original.target)
    assert np.all(np.abs(np.bincount(a.test.labels, minlength=10) - 0.25 * per_class) <= 1)


# ---------------------------------------------------------------------------------------------- synthetic


def test_synthetic_shapes_and_reproducibility():
    a = load_raw("synthetic", seed=3, synthetic_train=600, synthetic_test=250)
    assert a.train.images.shape == (600, 32, 32, 3) and a.test.images.shape == (250, 32, 32, 3)
    assert a.train.images.dtype == np.uint8 and a.train.labels.dtype == np.int64
    assert a.classes == [f"class{k}" for k in range(10)] and a.source_files == {} and a.superclass is None
    assert np.bincount(a.train.labels).tolist() == [60] * 10
    assert a.train.images.std() > 20  # real texture, not a flat image

    again = load_raw("synthetic", seed=3, synthetic_train=600, synthetic_test=250)
    other = load_raw("synthetic", seed=4, synthetic_train=600, synthetic_test=250)
    np.testing.assert_array_equal(a.train.images, again.train.images)
    np.testing.assert_array_equal(a.test.labels, again.test.labels)
    assert not np.array_equal(a.train.images, other.train.images)

    bigger_train = load_raw("synthetic", seed=3, synthetic_train=1500, synthetic_test=250)
    np.testing.assert_array_equal(a.test.images, bigger_train.test.images)


@pytest.mark.parametrize("side", [16, 8])
def test_small_synthetic_images_are_block_means_of_the_full_size_ones(side):
    full = load_raw("synthetic", seed=5, synthetic_train=30, synthetic_test=12)
    small = load_raw("synthetic", seed=5, synthetic_train=30, synthetic_test=12, synthetic_size=side)
    k = 32 // side
    for big, little in ((full.train, small.train), (full.test, small.test)):
        assert little.images.shape == (len(big.labels), side, side, 3) and little.images.dtype == np.uint8
        np.testing.assert_array_equal(little.labels, big.labels)
        i, y, x, c = 7 % len(big.labels), side - 1, side // 2, 2  # one pixel by hand: the mean of its k x k block
        block = [int(big.images[i, y * k + dy, x * k + dx, c]) for dy in range(k) for dx in range(k)]
        assert little.images[i, y, x, c] == round(sum(block) / len(block))
        means = big.images.astype(np.float64).reshape(-1, side, k, side, k, 3).mean(axis=(2, 4))
        assert np.abs(little.images - means).max() <= 0.5 + 1e-4  # every pixel rounded to the nearest level
    assert not full.horizontal_flip and not small.horizontal_flip  # a mirrored class pattern is no class's pattern


def test_synthetic_size_must_divide_the_full_size():
    with pytest.raises(UsageError, match=r"^--synthetic-size 12 is not offered: choose 32, 16 or 8$"):
        load_raw("synthetic", synthetic_train=10, synthetic_test=10, synthetic_size=12)


def test_synthetic_is_learnable_well_above_chance():
    data = load_raw("synthetic", seed=11, synthetic_train=3000, synthetic_test=1000)
    x = data.train.images.reshape(3000, -1).astype(np.float64)
    xt = data.test.images.reshape(1000, -1).astype(np.float64)
    means = np.stack([x[data.train.labels == k].mean(0) for k in range(10)])
    dist = ((xt[:, None, :] - means[None]) ** 2).sum(-1)
    accuracy = (dist.argmin(1) == data.test.labels).mean()
    assert accuracy > 0.5, accuracy  # chance is 0.1


@pytest.mark.parametrize("sizes", [(0, 10), (10, -1)])
def test_synthetic_bad_sizes_are_usage_error(sizes):
    with pytest.raises(UsageError, match="positive"):
        load_raw("synthetic", synthetic_train=sizes[0], synthetic_test=sizes[1])


# ------------------------------------------------------------------------------------------ channel stats


def test_channel_stats_match_float_computation():
    images = np.random.default_rng(12).integers(0, 256, (40, 9, 7, 3), dtype=np.uint8)
    images[..., 1] //= 2  # distinct channels
    images[..., 2] = 200
    mean, std = channel_stats(images)
    reference = images.astype(np.float64) / 255
    np.testing.assert_allclose(mean, reference.mean(axis=(0, 1, 2)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(std, reference.std(axis=(0, 1, 2)), rtol=0, atol=1e-9)
    assert std[2] == pytest.approx(0, abs=1e-7) and mean[2] == pytest.approx(200 / 255)


def test_datasets_tuple():
    assert DATASETS == ("cifar10", "cifar100", "digits", "synthetic")
