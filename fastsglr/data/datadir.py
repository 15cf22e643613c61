"""A prepared data directory: ``meta.json``, each split's arrays (``train.npz``, ``test.npz``: what the device-held
loader reads, without FFCV) and, where FFCV is installed, its betons (``train.beton``, ``test.beton``: what the
streaming FFCV loader reads); and the checks on reading it."""

import functools
import hashlib
import json
import math
import os
from dataclasses import dataclass, field

from ..errors import UsageError
from .beton import check_beton

SPLITS = ("train", "test")


def sha256(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class DataInfo:
    """What a data directory holds, read from its meta.json."""

    root: str
    dataset: str
    classes: tuple
    image_shape: tuple  # (H, W, C) as stored
    counts: dict  # split -> number of records
    mean: tuple  # per-channel, in [0, 1] units, of the training images
    std: tuple
    crop_padding: int  # zero padding of the training random crop (4 for 32 x 32 images)
    horizontal_flip: bool  # whether training flips images left-right (not digits: a mirrored 7 is no 7)
    noise: dict
    checksums: dict = field(default_factory=dict)  # file name -> sha256, as checked against the files on reading

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return self.image_shape[2]

    @property
    def image_size(self) -> int:
        return self.image_shape[0]

    def beton(self, split) -> str:
        return os.path.join(self.root, f"{split}.beton")

    def arrays(self, split) -> str:
        return os.path.join(self.root, f"{split}.npz")


def read_data_dir(root, loader="device") -> DataInfo:
    """Read and check a data directory: its arrays, and its betons too for the FFCV ``loader`` (the labels are read
    from the arrays either way); every problem is a one-line UsageError saying how to fix it."""
    meta_path = os.path.join(root, "meta.json")
    if not os.path.isdir(root):
        raise UsageError(f"data directory {root} does not exist: write it with `fastsglr prepare --out {root}`")
    if not os.path.isfile(meta_path):
        raise UsageError(f"{meta_path} is missing: {root} was not written by `fastsglr prepare`")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        info = DataInfo(
            root=root,
            dataset=meta["dataset"],
            classes=tuple(meta["classes"]),
            image_shape=tuple(meta["image_shape"]),
            counts=dict(meta["counts"]),
            mean=tuple(meta["mean"]),
            std=tuple(meta["std"]),
            crop_padding=int(meta["crop_padding"]),
            horizontal_flip=meta["horizontal_flip"],
            noise=dict(meta["noise"]),
            checksums=dict(meta.get("checksums", {})),
        )
        _check_meta(info, meta)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"{meta_path} is damaged ({exc!r}): re-run `fastsglr prepare`") from None
    for split in SPLITS:
        _check_exists(info.arrays(split))
        _check_checksum(info.arrays(split), info.checksums.get(f"{split}.npz"))
        if loader == "ffcv":
            check_beton(info.beton(split), info.image_shape, info.counts[split])
            _check_checksum(info.beton(split), info.checksums.get(f"{split}.beton"))
    return info


def _check_exists(path):
    if not os.path.isfile(path):
        raise UsageError(f"{path} is missing: run `fastsglr prepare` to write the data directory")


def _check_meta(info: DataInfo, meta):
    """What the betons cannot contradict (the shape and counts are checked against them): a ValueError names the
    field that does not add up."""
    channels = info.image_shape[2]
    if meta.get("num_classes", info.num_classes) != info.num_classes or not info.classes:
        raise ValueError(f"num_classes {meta.get('num_classes')} vs {info.num_classes} class names")
    if not (len(info.mean) == len(info.std) == channels):
        raise ValueError(f"mean/std of {len(info.mean)}/{len(info.std)} channels for {channels}-channel images")
    if not all(math.isfinite(m) for m in info.mean) or not all(math.isfinite(s) and s > 0 for s in info.std):
        raise ValueError(f"mean {info.mean} / std {info.std}: finite numbers, std above 0")
    if not isinstance(info.horizontal_flip, bool):
        raise ValueError(f"horizontal_flip {info.horizontal_flip!r}: true or false")
    if not 0 <= info.crop_padding <= info.image_size:
        raise ValueError(f"crop_padding {info.crop_padding} for {info.image_size}-pixel images")


def _check_checksum(path, expected):
    """A file replaced after `prepare` (say, by another data directory's of the same shape and size) passes every
    other check but holds other images or labels; only meta.json's checksum tells. A file meta.json does not list
    was not written by the `prepare` run that wrote meta.json (say, a beton left from an earlier run with FFCV)."""
    if expected is None:
        raise UsageError(
            f"{path} is not listed in meta.json (another `fastsglr prepare` run wrote it): re-run `fastsglr prepare`"
        )
    stat = os.stat(path)
    if _cached_sha256(path, stat.st_size, stat.st_mtime_ns) != expected:
        raise UsageError(
            f"{path} does not match the checksum in meta.json (it was replaced or changed after "
            f"`fastsglr prepare` wrote it): re-run `fastsglr prepare`"
        )


@functools.lru_cache(maxsize=16)
def _cached_sha256(path, size, mtime_ns):
    """Hashed again only when the file's size or time changed: the data directory is read once per run and per
    evaluation (many in `reproduce`), and a CIFAR beton takes a while to hash."""
    return sha256(path)
