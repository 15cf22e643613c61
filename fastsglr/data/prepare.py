"""`fastsglr prepare`: a raw source (CIFAR pickles, digits, synthetic) -> ``train.npz``, ``test.npz``, ``meta.json``,
and, where FFCV is installed, ``train.beton`` and ``test.beton``."""

import os

import numpy as np

from ..errors import UsageError
from ..files import check_free_space, check_writable_dir, holds, write_json
from .arrays import arrays_bytes, write_arrays
from .beton import beton_bytes, ffcv_available, write_beton
from .datadir import sha256
from .noise import NOISE_DEFINITIONS, corrupt_labels
from .sources import channel_stats, load_raw


def prepare(
    dataset,
    out,
    *,
    root=None,
    label_noise=0.0,
    noise_type="symmetric",
    seed=0,
    synthetic_train=50_000,
    synthetic_test=10_000,
    synthetic_size=32,
    num_workers=1,
    log=print,
):
    """Write a data directory. Only the training labels get noise; the clean labels are kept beside them."""
    raw = load_raw(
        dataset,
        root,
        seed=seed,
        synthetic_train=synthetic_train,
        synthetic_test=synthetic_test,
        synthetic_size=synthetic_size,
    )
    num_classes = len(raw.classes)
    noisy = corrupt_labels(
        raw.train.labels, num_classes, label_noise, noise_type, seed, superclass=raw.superclass, dataset=dataset
    )
    if holds(out) == "a training run":
        raise UsageError(
            f"--out {out} holds a training run: the data directory would be written into it; choose another --out"
        )
    betons = ffcv_available()
    parts = (("train", noisy, raw.train), ("test", raw.test.labels, raw.test))
    check_free_space(
        out,
        sum(arrays_bytes(p.images) + (beton_bytes(p.images) if betons else 0) for _, _, p in parts),
        "the data directory",
    )
    check_writable_dir(out)

    written = []
    for split, labels, part in parts:
        log(f"writing {split}.npz: {len(part.labels)} images of shape {part.images.shape[1:]}")
        write_arrays(os.path.join(out, f"{split}.npz"), part.images, labels, part.labels)
        written.append(f"{split}.npz")
        if betons:
            log(f"writing {split}.beton")
            write_beton(os.path.join(out, f"{split}.beton"), part.images, labels, part.labels, num_workers)
            written.append(f"{split}.beton")
    if not betons:
        log(
            "FFCV is not installed: wrote the arrays only, no betons (--loader device reads them; --loader ffcv "
            "needs FFCV and a prepare run where it is installed)"
        )

    mean, std = channel_stats(raw.train.images)
    height = raw.train.images.shape[1]
    meta = {
        "dataset": dataset,
        "classes": list(raw.classes),
        "num_classes": num_classes,
        "image_shape": list(raw.train.images.shape[1:]),
        "counts": {"train": len(raw.train.labels), "test": len(raw.test.labels)},
        "mean": mean,
        "std": std,
        # 4 pixels for 32 x 32 images (the CIFAR standard), scaled down for smaller images.
        "crop_padding": max(1, height // 8),
        "horizontal_flip": raw.horizontal_flip,
        # realised_rate: the share of training labels that differ from the clean ones (the wrong-label rate).
        "noise": {
            "type": noise_type if label_noise else "none",
            "rate": label_noise,
            "seed": seed,
            "definition": NOISE_DEFINITIONS[noise_type] if label_noise else "none",
            "realised_rate": float(np.mean(noisy != raw.train.labels)),
        },
        "checksums": {**{name: sha256(os.path.join(out, name)) for name in written}, **raw.source_files},
    }
    write_json(os.path.join(out, "meta.json"), meta)
    return meta
