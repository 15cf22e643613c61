"""A split as plain arrays (``train.npz``, ``test.npz``): the uint8 images (N x H x W x C), the training labels and
the clean labels, in index order (a sample's index is its position). What the device-held loader reads: numpy
alone, no FFCV (which the GPU box may lack: it compiles against OpenCV and libjpeg-turbo)."""

import zipfile

import numpy as np

from ..errors import UsageError
from ..files import atomic_file

FIELDS = ("images", "labels", "clean_labels")


def write_arrays(path, images, labels, clean_labels):
    """Uncompressed, so reading is a copy; written atomically like every other file."""
    with atomic_file(path, "wb") as f:
        np.savez(
            f,
            images=np.ascontiguousarray(images, dtype=np.uint8),
            labels=np.asarray(labels, dtype=np.int64),
            clean_labels=np.asarray(clean_labels, dtype=np.int64),
        )


def arrays_bytes(images) -> int:
    """About the size of a split's arrays: the pixels and two int64 labels per image (the zip headers are small)."""
    return images.nbytes + 16 * len(images) + (1 << 12)


def read_arrays(path, image_shape, num_samples, fields=FIELDS):
    """The ``fields`` of ``path`` (images, labels, clean_labels), each read only when asked for; a missing, damaged
    or mismatched file is a one-line UsageError."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in fields}
    except FileNotFoundError:
        raise UsageError(f"{path} is missing: run `fastsglr prepare` to write the data directory") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise UsageError(f"{path} is not a readable array file ({exc}): re-run `fastsglr prepare`") from None
    images = arrays.get("images")
    if images is not None and (images.dtype != np.uint8 or tuple(images.shape[1:]) != tuple(image_shape)):
        raise UsageError(
            f"{path} holds {images.dtype} images of shape {tuple(images.shape[1:])} but meta.json says "
            f"uint8 {tuple(image_shape)}: re-run `fastsglr prepare`"
        )
    for name, array in arrays.items():
        if len(array) != num_samples:
            raise UsageError(
                f"{path} holds {len(array)} {name.replace('_', ' ')} but meta.json says {num_samples}: "
                f"re-run `fastsglr prepare`"
            )
    return [arrays[name] for name in fields]
