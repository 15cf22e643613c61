"""Loaders: a prepared data directory in, ``Batch(images, labels, clean_labels, index)`` on the device out.

Two loaders behind one interface, yielding identical batches for the same (seed, epoch):
- ``FFCVLoader`` streams the beton through FFCV (decoding, ordering and host-to-device copy in worker threads);
- ``DeviceLoader`` holds the whole split on the training device, read from its arrays without FFCV (data that fits
  on the device: CIFAR on a GPU, digits, benchmarks; no workers at all).
Both visit samples in FFCV's epoch order (``default_rng(seed + epoch).permutation``; under torchrun FFCV's
distributed order, torch's DistributedSampler, which gives each rank a disjoint shard) and augment on the device
with ``augment.flip_crop``. Images come out as float32 in [0, 1], channels-last; normalisation is in the model.
"""

import contextlib
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from ..distributed import World
from ..errors import UsageError
from .arrays import read_arrays
from .augment import draw_flip_crop, epoch_generator, flip_crop
from .beton import require_ffcv
from .datadir import DataInfo

LOADER_KINDS = ("ffcv", "device")


class Batch(NamedTuple):
    images: torch.Tensor  # (B, C, H, W) float32 in [0, 1], channels-last
    labels: torch.Tensor  # (B,) int64: the training labels (noisy when label noise is on)
    clean_labels: torch.Tensor  # (B,) int64: the labels before corruption
    index: torch.Tensor  # (B,) int64: each sample's row in per-sample tables (SGLR, TE)


def train_steps(count: int, batch_size: int, world: World) -> int:
    """Training batches per epoch and rank: the last partial batch is dropped (one CUDA graph per batch shape), and
    under torchrun each rank gets DistributedSampler's share, ceil(count / ranks) (it pads with repeats)."""
    return -(-count // world.size) // batch_size


def eval_subset_indices(count: int, subset: int, seed: int):
    """A fixed seeded subset of the test split for cheap per-epoch evaluation (None: the whole split)."""
    if not subset or subset >= count:
        return None
    return np.sort(np.random.default_rng(seed).choice(count, size=subset, replace=False))


class _Loader:
    """What both loaders share: epoch bookkeeping and the step from raw uint8 to a training batch."""

    def __init__(
        self,
        info: DataInfo,
        split,
        batch_size,
        device,
        *,
        train,
        seed,
        indices=None,
        world=World(),
        augment="flip-crop",
    ):
        self.info, self.split, self.batch_size = info, split, batch_size
        self.device, self.train, self.seed, self.world = torch.device(device), train, seed, world
        self.augment = train and augment == "flip-crop"  # Config.augment; "none": the stored images as they are
        self.indices = np.arange(info.counts[split]) if indices is None else np.asarray(indices)
        if world.launched and not train:
            self.indices = self.indices[world.rank :: world.size]  # evaluation: a fixed shard per rank, no repeats
        self.epoch, self.start_step = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0):
        """Start the next iteration at batch ``start_step`` of this epoch (a resumed run replays the same order and
        augmentations)."""
        self.epoch, self.start_step = epoch, start_step

    def _begin_epoch(self):
        """This iteration's (epoch, first batch, augmentation generator), already advanced past skipped batches."""
        epoch, start = self.epoch, self.start_step
        self.epoch, self.start_step = epoch + 1, 0
        generator = epoch_generator(self.seed, epoch, self.device)
        if self.augment:
            for _ in range(start):
                draw_flip_crop(self.batch_size, self.info.crop_padding, generator)
        return epoch, start, generator

    @property
    def sharded(self) -> bool:
        """Training under torchrun: each rank visits its own shard of every epoch's permutation."""
        return self.train and self.world.launched

    def __len__(self):
        if self.train:
            return train_steps(len(self.indices), self.batch_size, self.world)
        return -(-len(self.indices) // self.batch_size)

    @property
    def num_samples(self) -> int:
        """Samples visited per epoch (training drops the last partial batch: one CUDA graph per batch shape)."""
        return len(self) * self.batch_size if self.train else len(self.indices)

    def _order(self, epoch):
        if not self.train:
            return self.indices
        if self.sharded:
            sampler = DistributedSampler(
                self.indices, num_replicas=self.world.size, rank=self.world.rank, shuffle=True, seed=self.seed
            )
            sampler.set_epoch(epoch)
            return self.indices[np.fromiter(sampler, dtype=np.int64)]
        return np.random.default_rng(self.seed + epoch).permutation(self.indices)

    def _finish(self, images_nhwc, labels, clean_labels, index, generator):
        images = images_nhwc.permute(0, 3, 1, 2)  # an NHWC buffer viewed as NCHW is channels-last already
        if self.augment:
            images = flip_crop(images, self.info.crop_padding, self.info.horizontal_flip, generator)
        images = images.to(torch.float32).div_(255).contiguous(memory_format=torch.channels_last)
        return Batch(images, labels.long(), clean_labels.long(), index.long())


class DeviceLoader(_Loader):
    """The whole split held on the device as uint8, read from its arrays (no FFCV): every batch is a gather, no
    worker processes."""

    def __init__(self, info: DataInfo, split, batch_size, device, **kwargs):
        super().__init__(info, split, batch_size, device, **kwargs)
        images, labels, clean_labels = read_split(info, split)
        self.images = torch.from_numpy(images).to(self.device)
        self.labels = torch.from_numpy(labels).to(self.device)
        self.clean_labels = torch.from_numpy(clean_labels).to(self.device)

    def __iter__(self):
        epoch, start, generator = self._begin_epoch()
        order = torch.from_numpy(self._order(epoch).astype(np.int64)).to(self.device)
        for b in range(start, len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]  # a sample's index is its position
            yield self._finish(self.images[idx], self.labels[idx], self.clean_labels[idx], idx, generator)


@contextlib.contextmanager
def _torch_threads_kept():
    """FFCV sets torch's intra-op thread count to its worker count (``Compiler.set_num_threads`` on import, in
    ``Loader.__init__`` and in ``Loader.__iter__``): the training's floating-point reductions would then depend on
    which loader runs, and a run would not repeat bit for bit with the other loader. Keep the caller's count."""
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class FFCVLoader(_Loader):
    """FFCV streams the beton: it decodes and orders the records and copies them to the device in worker threads;
    we augment there. For data that does not fit on the device."""

    def __init__(self, info: DataInfo, split, batch_size, device, *, num_workers=2, **kwargs):
        super().__init__(info, split, batch_size, device, **kwargs)
        require_ffcv()
        with _torch_threads_kept():
            from ffcv.fields.decoders import IntDecoder, NDArrayDecoder
            from ffcv.loader import Loader, OrderOption
            from ffcv.transforms import Squeeze, ToDevice, ToTensor

        def to_device():
            return [ToDevice(self.device, non_blocking=True)] if self.device.type == "cuda" else []

        label = [IntDecoder(), ToTensor(), Squeeze(-1), *to_device()]
        with _torch_threads_kept():
            self.loader = Loader(
                info.beton(split),
                batch_size=batch_size,
                num_workers=num_workers,
                seed=self.seed,
                order=OrderOption.RANDOM if self.train else OrderOption.SEQUENTIAL,
                drop_last=self.train,
                distributed=self.sharded,
                indices=self.indices,
                pipelines={
                    "image": [NDArrayDecoder(), ToTensor(), *to_device()],
                    "label": label,
                    "clean_label": list(label),
                    "index": list(label),
                },
            )

    def __iter__(self):
        epoch, start, generator = self._begin_epoch()
        self.loader.next_epoch = epoch
        with _torch_threads_kept():
            batches = iter(self.loader)
        for b, (images, labels, clean_labels, index) in enumerate(batches):
            if b < start:  # FFCV cannot seek: read and drop the batches a resumed epoch has done
                continue
            # FFCV reuses its output buffers: copy out before the next batch overwrites them (the image
            # conversion in _finish copies already).
            yield self._finish(images, labels.clone(), clean_labels.clone(), index.clone(), generator)


def read_split(info: DataInfo, split, fields=("images", "labels", "clean_labels")):
    """Fields of a whole split (images NHWC uint8, labels, clean labels), in index order, from its arrays."""
    return read_arrays(info.arrays(split), info.image_shape, info.counts[split], fields)


def read_labels(info: DataInfo, split) -> torch.Tensor:
    """The training labels of a split, in index order (SGLR's one-hot table starts from them)."""
    (labels,) = read_split(info, split, fields=("labels",))
    if len(labels) and not 0 <= labels.min() <= labels.max() < info.num_classes:
        bad = int(labels.max() if labels.max() >= info.num_classes else labels.min())
        raise UsageError(
            f"{info.arrays(split)} holds label {bad} but {info.root}/meta.json names "
            f"{info.num_classes} classes: re-run `fastsglr prepare`"
        )
    return torch.from_numpy(labels)


def make_loader(kind, info: DataInfo, split, batch_size, device, **kwargs):
    """``batch_size`` is per process: under torchrun, the global batch divided by the number of ranks. ``kwargs``:
    those of ``_Loader``."""
    return (DeviceLoader if kind == "device" else FFCVLoader)(info, split, batch_size, device, **kwargs)
