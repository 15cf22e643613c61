"""`fastsglr prepare`: a raw source (CIFAR pickles, digits, synthetic) -> ``train.beton``, ``test.beton``,
``meta.json``."""
import os

import numpy as np

from ..errors import UsageError
from .beton import beton_bytes, write_beton
from ..files import check_free_space, check_writable_dir, holds, write_json
from .datadir import sha256
from .noise import NOISE_DEFINITIONS, corrupt_labels
from .sources import channel_stats, load_raw


def prepare(dataset, out, *, root=None, label_noise=0.0, noise_type="symmetric", seed=0, synthetic_train=50_000,
            synthetic_test=10_000, num_workers=1, log=print):
    """Write a data directory. Only the training labels get noise; the clean labels are kept beside them."""
    raw = load_raw(dataset, root, seed=seed, synthetic_train=synthetic_train, synthetic_test=synthetic_test)
    num_classes = len(raw.classes)
    noisy = corrupt_labels(raw.train.labels, num_classes, label_noise, noise_type, seed,
                           superclass=raw.superclass, dataset=dataset)
    if holds(out) == "a training run":
        raise UsageError(f"--out {out} holds a training run: the data directory would be written into it; choose "
                         f"another --out")
    check_free_space(out, beton_bytes(raw.train.images) + beton_bytes(raw.test.images), "the data directory")
    check_writable_dir(out)

    for split, labels, part in (("train", noisy, raw.train), ("test", raw.test.labels, raw.test)):
        log(f"writing {split}.beton: {len(part.labels)} images of shape {part.images.shape[1:]}")
        write_beton(os.path.join(out, f"{split}.beton"), part.images, labels, part.labels, num_workers)

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
        # realised_rate: the share of training labels that differ from the clean ones (the wrong-label rate).
        "noise": {"type": noise_type if label_noise else "none", "rate": label_noise, "seed": seed,
                  "definition": NOISE_DEFINITIONS[noise_type] if label_noise else "none",
                  "realised_rate": float(np.mean(noisy != raw.train.labels))},
        "checksums": {**{f"{s}.beton": sha256(os.path.join(out, f"{s}.beton")) for s in ("train", "test")},
                      **raw.source_files},
    }
    write_json(os.path.join(out, "meta.json"), meta)
    return meta
