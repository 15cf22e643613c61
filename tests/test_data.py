"""The data path: prepare -> arrays (and betons, with FFCV) -> loaders. Arrays read back pixel-exact and the betons
hold the same records; loaders visit every index once per epoch, augment correctly, keep the clean labels, and the
FFCV and device-held loaders yield identical batches."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from fastsglr.cli import main
from fastsglr.data.arrays import read_arrays, write_arrays
from fastsglr.data.augment import epoch_generator, flip_crop
from fastsglr.data.beton import ffcv_available
from fastsglr.data.datadir import read_data_dir
from fastsglr.data.loaders import DeviceLoader, FFCVLoader, eval_subset_indices, make_loader, read_split
from fastsglr.data.noise import corrupt_labels
from fastsglr.data.sources import load_raw
from fastsglr.errors import UsageError

needs_ffcv = pytest.mark.skipif(not ffcv_available(), reason="needs ffcv (the streaming loader)")


def _variants(image_chw, padding, horizontal_flip=True):
    """Every image flip_crop can produce from one image: (2 flips or none) x (2p+1)^2 crop offsets."""
    C, H, W = image_chw.shape
    out = []
    for flipped in (image_chw, image_chw.flip(2)) if horizontal_flip else (image_chw,):
        padded = torch.nn.functional.pad(flipped, (padding,) * 4)
        out += [padded[:, dy : dy + H, dx : dx + W] for dy in range(2 * padding + 1) for dx in range(2 * padding + 1)]
    return torch.stack(out)


def test_flip_crop_hand_made_image():
    # A 1 x 3 x 4 image with distinct values: flipped, shifted right by one (dx = 0), down by one (dy = 0).
    image = torch.arange(1, 13, dtype=torch.uint8).reshape(1, 1, 3, 4)
    g = epoch_generator(0, 0, "cpu")
    flip, dy, dx = (
        (torch.rand(1, generator=g) < 0.5),
        torch.randint(0, 3, (1,), generator=g),
        torch.randint(0, 3, (1,), generator=g),
    )
    out = flip_crop(image, 1, True, epoch_generator(0, 0, "cpu"))[0, 0]
    src = image[0, 0].flip(1) if flip else image[0, 0]
    expected = torch.zeros(5, 6, dtype=torch.uint8)
    expected[1:4, 1:5] = src
    assert torch.equal(out, expected[dy : dy + 3, dx : dx + 4])
    # And by hand, one concrete case: flip then crop at offset (0, 0) of the zero-padded image.
    padded = torch.zeros(5, 6, dtype=torch.uint8)
    padded[1:4, 1:5] = image[0, 0].flip(1)
    assert padded[0:3, 0:4].tolist() == [[0, 0, 0, 0], [0, 4, 3, 2], [0, 8, 7, 6]]


def test_flip_crop_without_flip_crops_the_same_place_unflipped():
    # Images that are not mirror-symmetric in every row, so a flip would show; one seed gives the same crop offsets.
    images = torch.randint(0, 256, (64, 1, 6, 7), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    with_flip = flip_crop(images, 2, True, epoch_generator(1, 2, "cpu"))
    without = flip_crop(images, 2, False, epoch_generator(1, 2, "cpu"))
    unflipped_by_hand = flip_crop(images.flip(3), 2, True, epoch_generator(1, 2, "cpu"))
    g = epoch_generator(1, 2, "cpu")
    flipped = torch.rand(64, generator=g) < 0.5
    assert 10 < int(flipped.sum()) < 54
    # Where the flip was drawn, with_flip = crop(flip(x)) and the same crop of flip(flip(x)) = x is `without`.
    assert torch.equal(without[flipped], unflipped_by_hand[flipped])
    assert torch.equal(without[~flipped], with_flip[~flipped])
    assert not torch.equal(without[flipped], with_flip[flipped])


def test_prepare_digits_reads_back_pixel_exact(digits_dir):
    info = read_data_dir(digits_dir)
    raw = load_raw("digits")
    assert info.image_shape == (8, 8, 1) and info.num_classes == 10 and info.crop_padding == 1
    assert info.horizontal_flip is False
    for split, part in (("train", raw.train), ("test", raw.test)):
        images, labels, clean = read_split(info, split)
        assert np.array_equal(images, part.images)
        assert np.array_equal(labels, part.labels) and np.array_equal(clean, part.labels)
    meta = json.load(open(os.path.join(digits_dir, "meta.json")))
    assert meta["counts"] == {"train": len(raw.train.labels), "test": len(raw.test.labels)}
    assert set(meta["checksums"]) >= {"train.npz", "test.npz"}
    # mean/std are the training images' per-channel statistics in [0, 1] units
    assert np.allclose(meta["mean"], raw.train.images.reshape(-1, 1).mean(0) / 255, atol=1e-6)


@needs_ffcv
def test_betons_hold_the_arrays_records(noisy_digits_dir):
    """Every record of both betons, read in order by the FFCV loader without augmentation, is the arrays' sample of
    that index: the two loaders read the same data."""
    info = read_data_dir(noisy_digits_dir, loader="ffcv")
    assert set(json.load(open(os.path.join(noisy_digits_dir, "meta.json")))["checksums"]) >= {
        "train.beton",
        "test.beton",
    }
    for split in ("train", "test"):
        images, labels, clean = read_split(info, split)
        batches = list(FFCVLoader(info, split, 100, "cpu", train=False, seed=0))
        assert np.array_equal(torch.cat([b.index for b in batches]).numpy(), np.arange(len(images)))
        expected = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        assert torch.equal(torch.cat([b.images for b in batches]), expected)
        assert np.array_equal(torch.cat([b.labels for b in batches]).numpy(), labels)
        assert np.array_equal(torch.cat([b.clean_labels for b in batches]).numpy(), clean)


def test_label_noise_is_recorded_and_clean_labels_kept(noisy_digits_dir):
    info = read_data_dir(noisy_digits_dir)
    _, labels, clean = read_split(info, "train")
    rate = np.mean(labels != clean)
    # symmetric noise resamples int(0.3 N) labels over all 10 classes: about 27% come out wrong, never more than 30%
    assert 0.2 < rate <= int(0.3 * len(labels)) / len(labels)
    assert info.noise["type"] == "symmetric" and info.noise["realised_rate"] == pytest.approx(rate)
    assert "resampled uniformly over all K classes" in info.noise["definition"]
    assert np.array_equal(clean, load_raw("digits").train.labels)
    _, test_labels, test_clean = read_split(info, "test")
    assert np.array_equal(test_labels, test_clean), "only the training split gets noise"


@pytest.mark.parametrize("kind", [pytest.param("ffcv", marks=needs_ffcv), "device"])
def test_train_loader_visits_every_index_once_and_augments(noisy_digits_dir, kind):
    info = read_data_dir(noisy_digits_dir)
    images, labels, clean = read_split(info, "train")
    loader = (FFCVLoader if kind == "ffcv" else DeviceLoader)(info, "train", 64, "cpu", train=True, seed=3)
    orders = []
    for epoch in range(2):
        seen = []
        for batch in loader:
            assert batch.images.dtype == torch.float32 and batch.images.shape[1:] == (1, 8, 8)
            assert batch.images.is_contiguous(memory_format=torch.channels_last)
            idx = batch.index.numpy()
            assert np.array_equal(batch.labels.numpy(), labels[idx])
            assert np.array_equal(batch.clean_labels.numpy(), clean[idx])
            for img, i in zip(batch.images[:8], idx[:8]):
                original = torch.from_numpy(images[i]).permute(2, 0, 1).float() / 255
                crops = _variants(original, 1, horizontal_flip=False)  # digits: a mirrored digit is another shape
                assert (crops == img).all(dim=(1, 2, 3)).any(), "not an unflipped crop of its source"
            seen.append(idx)
        seen = np.concatenate(seen)
        assert len(seen) == len(loader) * 64 == (len(labels) // 64) * 64  # drop_last
        assert len(np.unique(seen)) == len(seen)
        orders.append(seen)
    assert not np.array_equal(orders[0], orders[1]), "each epoch reshuffles"


@pytest.mark.parametrize("kind", [pytest.param("ffcv", marks=needs_ffcv), "device"])
def test_train_loader_without_augmentation_yields_the_stored_images_in_the_same_order(digits_dir, kind):
    info = read_data_dir(digits_dir, loader=kind)
    images, _, _ = read_split(info, "train")
    loaders = [
        make_loader(kind, info, "train", 64, "cpu", train=True, seed=4, augment=a) for a in ("flip-crop", "none")
    ]
    changed = 0
    for augmented, plain in zip(*loaders):
        assert torch.equal(augmented.index, plain.index), "augmentation does not change the order"
        stored = torch.from_numpy(images[plain.index.numpy()]).permute(0, 3, 1, 2).float() / 255
        assert torch.equal(plain.images, stored)
        changed += int((augmented.images != stored).flatten(1).any(1).sum())
    assert changed > len(loaders[0]) * 32, "the flip-crop loader does move most images"


@needs_ffcv
def test_ffcv_and_device_loaders_yield_identical_batches(digits_dir):
    info = read_data_dir(digits_dir, loader="ffcv")
    kw = dict(train=True, seed=5)
    ffcv, dev = FFCVLoader(info, "train", 50, "cpu", **kw), DeviceLoader(info, "train", 50, "cpu", **kw)
    for loader in (ffcv, dev):
        loader.set_epoch(4)
    for a, b in zip(ffcv, dev):
        for x, y in zip(a, b):
            assert torch.equal(x, y)


@needs_ffcv
def test_ffcv_loader_keeps_torch_thread_count(digits_dir):
    """FFCV sets torch's intra-op threads to its worker count; ours must not, or training's reductions (and so its
    results, bit for bit) would depend on the loader."""
    before, threads = torch.get_num_threads(), 1  # FFCV would set 2, its worker count (numba allows up to the cores)
    torch.set_num_threads(threads)
    try:
        loader = FFCVLoader(read_data_dir(digits_dir, "ffcv"), "train", 64, "cpu", train=True, seed=0, num_workers=2)
        assert torch.get_num_threads() == threads
        next(iter(loader))
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("kind", [pytest.param("ffcv", marks=needs_ffcv), "device"])
def test_test_loader_in_order_and_subset(digits_dir, kind):
    info = read_data_dir(digits_dir)
    n = info.counts["test"]
    sub = eval_subset_indices(n, 100, seed=0)
    assert len(sub) == 100 and np.array_equal(sub, eval_subset_indices(n, 100, seed=0))
    cls = FFCVLoader if kind == "ffcv" else DeviceLoader
    full = np.concatenate([b.index.numpy() for b in cls(info, "test", 64, "cpu", train=False, seed=0)])
    assert np.array_equal(full, np.arange(n)), "the test split is read whole, in order, unaugmented"
    part = np.concatenate([b.index.numpy() for b in cls(info, "test", 64, "cpu", train=False, seed=0, indices=sub)])
    assert np.array_equal(part, sub)


def test_bad_data_directories_are_named(tmp_path, digits_dir):
    with pytest.raises(UsageError, match="does not exist"):
        read_data_dir(str(tmp_path / "nowhere"))
    with pytest.raises(UsageError, match="meta.json is missing"):
        read_data_dir(str(tmp_path))
    broken = shutil.copytree(digits_dir, tmp_path / "broken")
    os.remove(broken / "test.npz")
    with pytest.raises(UsageError, match=f"^{broken}/test.npz is missing: run `fastsglr prepare`"):
        read_data_dir(str(broken))
    (broken / "test.npz").write_bytes(open(os.path.join(digits_dir, "test.npz"), "rb").read()[:-10])
    with pytest.raises(UsageError, match=f"^{broken}/test.npz does not match the checksum in meta.json"):
        read_data_dir(str(broken))


@needs_ffcv
def test_bad_betons_are_named(tmp_path, digits_dir):
    broken = shutil.copytree(digits_dir, tmp_path / "broken")
    (broken / "train.beton").write_bytes(b"not a beton")
    read_data_dir(str(broken))  # the device-held loader reads the arrays only
    with pytest.raises(UsageError, match=f"^{broken}/train.beton is not a readable FFCV file"):
        read_data_dir(str(broken), loader="ffcv")


def test_arrays_that_do_not_fit_meta_json_are_named(tmp_path, digits_dir):
    """The checks on reading the arrays themselves (meta.json edited by hand, or a file written by hand)."""
    info = read_data_dir(digits_dir)
    path = str(tmp_path / "train.npz")
    images, labels, clean = read_split(info, "train")
    write_arrays(path, images[:-1], labels[:-1], clean[:-1])
    with pytest.raises(UsageError, match=f"holds {len(images) - 1} images but meta.json says {len(images)}"):
        read_arrays(path, info.image_shape, len(images))
    with pytest.raises(UsageError, match=r"shape \(8, 8, 1\) but meta.json says uint8 \(8, 8, 3\)"):
        read_arrays(path, (8, 8, 3), len(images) - 1)
    open(path, "wb").write(b"not an npz")
    with pytest.raises(UsageError, match="is not a readable array file"):
        read_arrays(path, info.image_shape, len(images))


def test_cli_prepare_errors_exit_2(tmp_path, capsys):
    assert main(["prepare", "--dataset", "digits", "--out", str(tmp_path / "d"), "--label-noise", "1.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "label-noise" in err
    assert main(["prepare", "--dataset", "imagenet", "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "invalid choice: 'imagenet'" in err


@pytest.mark.parametrize("dataset,packed", [("cifar10", True), ("cifar10", False), ("cifar100", True)])
def test_prepare_fake_cifar_reads_back_pixel_exact(tmp_path, dataset, packed):
    from fake_cifar import _pixel_of_row, _tar, _write_cifar10, _write_cifar100

    raw = tmp_path / "raw"
    rng = np.random.default_rng(11)
    expected = (_write_cifar10 if dataset == "cifar10" else _write_cifar100)(raw, rng)
    if packed:
        folder = "cifar-10-batches-py" if dataset == "cifar10" else "cifar-100-python"
        _tar(raw, folder, "cifar-10-python.tar.gz" if dataset == "cifar10" else "cifar-100-python.tar.gz")
        import shutil

        shutil.rmtree(raw / folder)
    out = tmp_path / "data"
    assert (
        main(
            [
                "prepare",
                "--dataset",
                dataset,
                "--root",
                str(raw),
                "--out",
                str(out),
                "--label-noise",
                "0.25",
                "--seed",
                "4",
            ]
        )
        == 0
    )
    info = read_data_dir(str(out))
    assert info.image_shape == (32, 32, 3) and info.crop_padding == 4 and info.horizontal_flip is True
    assert info.num_classes == (10 if dataset == "cifar10" else 100)
    for split in ("train", "test"):
        images, labels, clean = read_split(info, split)
        rows = expected[f"{split}_rows"]
        n, h, w, c = np.meshgrid(np.arange(len(rows)), np.arange(32), np.arange(32), np.arange(3), indexing="ij")
        assert np.array_equal(images[n, h, w, c], _pixel_of_row(rows, n, h, w, c)), "channel or pixel order"
        assert np.array_equal(clean, expected[f"{split}_labels"])
        if split == "train":
            # the labels the noise drew (its statistics: test_noise.py) reach the beton, next to the clean ones
            assert np.array_equal(
                labels, corrupt_labels(clean, info.num_classes, 0.25, "symmetric", 4, dataset=dataset)
            )
            assert 0 < np.sum(labels != clean) <= int(0.25 * len(labels))
            first_noisy = labels
        else:
            assert np.array_equal(labels, clean)
    if dataset == "cifar10":  # the hand-made first image: red at (0, 0), green at (1, 2), black elsewhere
        img = read_split(info, "train")[0][0]
        assert tuple(img[0, 0]) == (255, 0, 0) and tuple(img[1, 2]) == (0, 255, 0) and img.sum() == 510
    # the same seed reproduces the noise, another seed changes it
    again, other = tmp_path / "again", tmp_path / "other"
    assert (
        main(
            [
                "prepare",
                "--dataset",
                dataset,
                "--root",
                str(raw),
                "--out",
                str(again),
                "--label-noise",
                "0.25",
                "--seed",
                "4",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "prepare",
                "--dataset",
                dataset,
                "--root",
                str(raw),
                "--out",
                str(other),
                "--label-noise",
                "0.25",
                "--seed",
                "5",
            ]
        )
        == 0
    )
    assert np.array_equal(read_split(read_data_dir(str(again)), "train")[1], first_noisy)
    assert not np.array_equal(read_split(read_data_dir(str(other)), "train")[1], first_noisy)
