"""FFCV .beton files: one record per image holding (image, label, clean_label, index), for the streaming loader.

The image is stored raw (uint8, H x W x C) as an NDArrayField so that grey-scale (digits) and RGB (CIFAR) data
share one format; the index is stored because FFCV has no sample-index output and SGLR keeps one soft-label row
per training sample. FFCV is optional (it compiles against OpenCV and libjpeg-turbo, and the GPU box lacks it):
without it a data directory holds only the arrays the device-held loader reads (``arrays.py``).
"""

import functools
import os

import numpy as np

from ..errors import UsageError

FIELDS = ("image", "label", "clean_label", "index")
PAGE_SIZE = 1 << 21  # FFCV allocates records in pages of this size


@functools.cache
def ffcv_available() -> bool:
    """Whether ``import ffcv`` works (an install whose compiled parts cannot load counts as missing)."""
    try:
        import ffcv  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


def require_ffcv():
    if not ffcv_available():
        raise UsageError(
            "--loader ffcv needs FFCV, which cannot be imported here: use --loader device (the data set "
            "held on the device), or install FFCV (pip install 'fastsglr[ffcv]')"
        )


class _Records:
    """The indexed-dataset view that FFCV's writer iterates over."""

    def __init__(self, images, labels, clean_labels):
        self.images, self.labels, self.clean_labels = images, labels, clean_labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i]), int(self.clean_labels[i]), i


def write_beton(path, images, labels, clean_labels, num_workers=1):
    """Write a beton atomically (temp file + rename), so a crash never leaves a half-written file behind."""
    from ffcv.fields import IntField, NDArrayField
    from ffcv.writer import DatasetWriter

    images = np.ascontiguousarray(images, dtype=np.uint8)
    fields = {
        "image": NDArrayField(dtype=np.dtype("uint8"), shape=tuple(images.shape[1:])),
        "label": IntField(),
        "clean_label": IntField(),
        "index": IntField(),
    }
    tmp = f"{path}.tmp"
    try:
        writer = DatasetWriter(tmp, fields, num_workers=num_workers, page_size=PAGE_SIZE)
        writer.from_indexed_dataset(_Records(images, labels, clean_labels), chunksize=256)
    except BaseException:  # Ctrl-C or SIGTERM included: no half-written temp file left behind
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    os.replace(tmp, path)


def beton_bytes(images) -> int:
    """About the size of a beton of ``images``: the pixels, a few dozen bytes of metadata per record, and a header
    and partly filled pages (measured: 3.6 MB over the pixels for 5,000 CIFAR-sized images)."""
    return images.nbytes + 64 * len(images) + 3 * PAGE_SIZE


def check_beton(path, image_shape, num_samples=None):
    """Fail with a one-line error unless ``path`` is a beton with our fields, image shape and size."""
    require_ffcv()
    from ffcv.fields import IntField, NDArrayField
    from ffcv.reader import Reader

    if not os.path.isfile(path):
        raise UsageError(f"{path} is missing: run `fastsglr prepare` to write the data directory")
    try:
        reader = Reader(path)
    except Exception as exc:  # FFCV raises assorted errors on a damaged header
        raise UsageError(f"{path} is not a readable FFCV file ({exc}): re-run `fastsglr prepare`") from None
    expected = {"image": NDArrayField, "label": IntField, "clean_label": IntField, "index": IntField}
    found = {name: type(handler) for name, handler in reader.handlers.items()}
    if found != expected:
        raise UsageError(
            f"{path} has fields {sorted(found)} ({', '.join(t.__name__ for t in found.values())}), "
            f"expected {list(FIELDS)}: re-run `fastsglr prepare`"
        )
    shape = tuple(int(n) for n in reader.handlers["image"].shape)  # FFCV's are numpy integers: print them plain
    if shape != tuple(image_shape):
        raise UsageError(
            f"{path} holds images of shape {shape} but meta.json says {tuple(image_shape)}: re-run `fastsglr prepare`"
        )
    if num_samples is not None and int(reader.num_samples) != num_samples:
        raise UsageError(
            f"{path} holds {int(reader.num_samples)} records but meta.json says {num_samples}: "
            f"re-run `fastsglr prepare`"
        )
    return reader
