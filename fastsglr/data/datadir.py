"""A prepared data directory: ``train.beton``, ``test.beton`` and ``meta.json``, and the checks on reading it."""
import functools
import hashlib
import json
import os
from dataclasses import dataclass

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
    image_shape: tuple          # (H, W, C) as stored
    counts: dict                # split -> number of records
    mean: tuple                 # per-channel, in [0, 1] units, of the training images
    std: tuple
    crop_padding: int           # zero padding of the training random crop (4 for 32 x 32 images)
    noise: dict

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


def read_data_dir(root) -> DataInfo:
    """Read and check a data directory; every problem is a one-line UsageError saying how to fix it."""
    meta_path = os.path.join(root, "meta.json")
    if not os.path.isdir(root):
        raise UsageError(f"data directory {root} does not exist: write it with `fastsglr prepare --out {root}`")
    if not os.path.isfile(meta_path):
        raise UsageError(f"{meta_path} is missing: {root} was not written by `fastsglr prepare`")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        info = DataInfo(root=root, dataset=meta["dataset"], classes=tuple(meta["classes"]),
                        image_shape=tuple(meta["image_shape"]), counts=dict(meta["counts"]),
                        mean=tuple(meta["mean"]), std=tuple(meta["std"]), crop_padding=int(meta["crop_padding"]),
                        noise=dict(meta["noise"]))
        checksums = dict(meta.get("checksums", {}))
    except (ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{meta_path} is damaged ({exc!r}): re-run `fastsglr prepare`") from None
    for split in SPLITS:
        check_beton(info.beton(split), info.image_shape, info.counts[split])
        _check_checksum(info.beton(split), checksums.get(f"{split}.beton"))
    return info


def _check_checksum(path, expected):
    """A beton replaced after `prepare` (say, by another data directory's of the same shape and size) passes every
    other check but holds other images or labels; only meta.json's checksum tells."""
    stat = os.stat(path)
    if expected is not None and _cached_sha256(path, stat.st_size, stat.st_mtime_ns) != expected:
        raise UsageError(f"{path} does not match the checksum in meta.json (it was replaced or changed after "
                         f"`fastsglr prepare` wrote it): re-run `fastsglr prepare`")


@functools.lru_cache(maxsize=16)
def _cached_sha256(path, size, mtime_ns):
    """Hashed again only when the file's size or time changed: the data directory is read once per run and per
    evaluation (many in `reproduce`), and a CIFAR beton takes a while to hash."""
    return sha256(path)
