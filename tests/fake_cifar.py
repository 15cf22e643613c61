"""Hand-built CIFAR-10/100 releases in the official python-pickle format, for the reader and prepare tests."""

import pickle
import tarfile
from pathlib import Path

import numpy as np

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# ------------------------------------------------------------------------------------ fake official releases


def _dump(path: Path, obj: dict, numpy1: bool = True) -> None:
    """Pickle as the official files are: bytes keys, protocol 2, and (numpy1) arrays named by numpy 1's module
    path, as the official files were written before numpy 2 renamed numpy.core to numpy._core."""
    data = pickle.dumps(obj, protocol=2)
    if numpy1:
        data = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    path.write_bytes(data)


def _fake_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def _tar(root: Path, folder: str, archive: str) -> Path:
    """Pack root/folder into root/archive, as distributed."""
    path = root / archive
    with tarfile.open(path, "w:gz") as tar:
        tar.add(root / folder, arcname=folder)
    return path


def _write_cifar10(root: Path, rng: np.random.Generator) -> dict:
    """5 train batches of 7 images and a test batch of 6. The very first image is all black except a pure red
    top-left pixel and a pure green pixel at row 1, column 2, so a transposed or channel-swapped read shows."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_rows, train_labels = [], []
    for i in range(1, 6):
        rows, labels = _fake_rows(rng, 7), rng.integers(0, 10, 7).tolist()
        if i == 1:
            rows[0] = 0
            rows[0, 0] = 255  # R plane, (h 0, w 0)
            rows[0, 1024 + 1 * 32 + 2] = 255  # G plane, (h 1, w 2)
        _dump(folder / f"data_batch_{i}", {b"batch_label": b"training batch", b"data": rows, b"labels": labels})
        train_rows.append(rows)
        train_labels += labels
    test_rows, test_labels = _fake_rows(rng, 6), rng.integers(0, 10, 6).tolist()
    _dump(folder / "test_batch", {b"batch_label": b"testing batch", b"data": test_rows, b"labels": test_labels})
    _dump(folder / "batches.meta", {b"label_names": [n.encode() for n in CIFAR10_NAMES], b"num_vis": 3072})
    return {
        "train_rows": np.concatenate(train_rows),
        "train_labels": np.array(train_labels),
        "test_rows": test_rows,
        "test_labels": np.array(test_labels),
    }


def _write_cifar100(root: Path, rng: np.random.Generator) -> dict:
    """A random fine -> coarse map (20 superclasses of 5); train holds every fine class once plus extras.
    Pickled as numpy 2 would (numpy._core paths), so both module paths are covered."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    superclass = rng.permutation(np.repeat(np.arange(20), 5))
    expected = {"superclass": superclass, "names": [f"fine{k}" for k in range(100)]}
    for split, labels in (
        ("train", np.concatenate([rng.permutation(100), rng.integers(0, 100, 20)])),
        ("test", rng.integers(0, 100, 9)),
    ):
        rows = _fake_rows(rng, len(labels))
        _dump(
            folder / split,
            {
                b"data": rows,
                b"fine_labels": labels.tolist(),
                b"coarse_labels": superclass[labels].tolist(),
            },
            numpy1=False,
        )
        expected[f"{split}_rows"], expected[f"{split}_labels"] = rows, labels
    _dump(
        folder / "meta",
        {
            b"fine_label_names": [n.encode() for n in expected["names"]],
            b"coarse_label_names": [f"coarse{k}".encode() for k in range(20)],
        },
        numpy1=False,
    )
    return expected


def _pixel_of_row(rows: np.ndarray, n, h, w, c):
    """The official layout, spelled out: R plane, G plane, B plane, each 32x32 row-major."""
    return rows[n, c * 1024 + h * 32 + w]
