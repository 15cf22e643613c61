"""Synthetic label noise for the noisy-label experiments: symmetric (two readings) and the standard asymmetric
(class-flip) maps.

- ``symmetric``, the paper's and its authors' definition: a fraction ``rate`` of the labels is *resampled* uniformly
  over all K classes. Paper, Sec. 4: "the labels are resampled from a uniform distribution over all labels with a
  probability eta"; the authors' code (devicerxx/SGLS ships ``datasets/random_noise`` only as a .pyc; it is
  ``label_noise`` of Huang et al.'s self-adaptive-training code, ``datasets/utils.py``) draws ``int(rate * N)``
  samples without replacement and gives each a label drawn uniformly from all K classes. The true class can come
  back, so the share of wrong labels is about rate * (K - 1) / K (36% at rate 0.4 for K = 10); ``meta.json`` records
  the realised share.
- ``symmetric-flip``: exactly round(rate * N) samples, each moved to one of the other K - 1 classes, so the share
  of wrong labels is the rate itself (how the paper's Fig. 4 wording, "40% noisy labels and fully 60% true labels",
  reads).
- ``asymmetric``: in each source class, exactly round(rate * class size) samples flipped to the mapped class.
"""

import numpy as np

from ..errors import UsageError

NOISE_TYPES = ("symmetric", "symmetric-flip", "asymmetric")
# What each type draws, in words: recorded in meta.json, so a data directory says which reading of its type it holds.
NOISE_DEFINITIONS = {
    "symmetric": "int(rate * N) training labels resampled uniformly over all K classes (the true class can return)",
    "symmetric-flip": "round(rate * N) training labels each moved to a uniformly drawn other class",
    "asymmetric": "round(rate * n_c) labels of each mapped class c moved to its mapped class",
}

# The standard CIFAR-10 map of visually similar classes (Patrini et al. 2017), by class index:
# truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog.
_CIFAR10_FLIPS = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}


def corrupt_labels(
    labels: np.ndarray,
    num_classes: int,
    rate: float,
    kind: str,
    seed: int,
    superclass: np.ndarray | None = None,
    dataset: str = "",
) -> np.ndarray:
    """A noisy copy of `labels` (int64); the input is never modified.

    symmetric: int(rate * N) samples, chosen uniformly, each relabelled uniformly over all K classes.
    symmetric-flip: exactly round(rate * N) samples, chosen uniformly, each moved to one of the other K - 1 classes.
    asymmetric: in each source class of the data set's map, exactly round(rate * class size) samples are moved
    to the mapped class (CIFAR-10: `_CIFAR10_FLIPS`; CIFAR-100: the next fine class of the same superclass).
    """
    _check_request(rate, kind, dataset)
    labels = _checked_labels(labels, num_classes)
    if rate == 0:
        return labels.copy()
    rng = np.random.default_rng(seed)
    if kind == "symmetric":
        return _resample(labels, num_classes, rate, rng)
    if kind == "symmetric-flip":
        return _flip_to_other(labels, num_classes, rate, rng)
    flips = _CIFAR10_FLIPS if dataset == "cifar10" else _next_in_superclass(superclass, num_classes)
    return _flip_classes(labels, flips, rate, rng)


def _check_request(rate: float, kind: str, dataset: str) -> None:
    """Everything here comes from the command line, so problems are UsageErrors naming the flag's value."""
    if not 0 <= rate < 1:  # also rejects NaN
        raise UsageError(f"--label-noise {rate} is out of range: it must lie in [0, 1)")
    if kind not in NOISE_TYPES:
        raise UsageError(f"unknown label-noise type {kind!r}: choose one of {', '.join(NOISE_TYPES)}")
    if kind == "asymmetric" and dataset not in ("cifar10", "cifar100"):
        raise UsageError(
            f"asymmetric noise is defined for cifar10 and cifar100 only, not {dataset or 'this data set'!r}: "
            f"use symmetric noise"
        )


def _checked_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Labels as int64, after the checks that keep the modular arithmetic below meaningful (caller bugs)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D integer array, got {labels.dtype} {labels.shape}")
    if num_classes < 2 or (labels.size and (labels.min() < 0 or labels.max() >= num_classes)):
        raise ValueError(f"labels must lie in 0..{num_classes - 1} with at least 2 classes")
    return labels.astype(np.int64)


def _resample(labels: np.ndarray, num_classes: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """The authors' draw (int, not round, as theirs; numpy's Generator instead of their np.random.seed state)."""
    noisy = labels.copy()
    chosen = rng.choice(len(labels), size=int(rate * len(labels)), replace=False)
    noisy[chosen] = rng.integers(0, num_classes, size=len(chosen))
    return noisy


def _flip_to_other(labels: np.ndarray, num_classes: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """A nonzero offset modulo K is uniform over the K - 1 other classes, so every chosen label really changes."""
    noisy = labels.copy()
    chosen = rng.choice(len(labels), size=round(rate * len(labels)), replace=False)
    noisy[chosen] = (labels[chosen] + rng.integers(1, num_classes, size=len(chosen))) % num_classes
    return noisy


def _next_in_superclass(superclass: np.ndarray | None, num_classes: int) -> dict[int, int]:
    """CIFAR-100's map: within each superclass, each fine class (in index order) goes to the next, cyclically."""
    if superclass is None or np.shape(superclass) != (num_classes,):
        raise ValueError("asymmetric CIFAR-100 noise needs `superclass`, the (num_classes,) fine -> coarse map")
    flips = {}
    for coarse in np.unique(superclass):
        members = np.flatnonzero(superclass == coarse)  # ascending
        flips.update(zip(members.tolist(), np.roll(members, -1).tolist()))
    return flips


def _flip_classes(labels: np.ndarray, flips: dict[int, int], rate: float, rng: np.random.Generator) -> np.ndarray:
    """Samples are chosen by their original label, so a cat moved to dog is never moved back (cat <-> dog)."""
    noisy = labels.copy()
    for source, target in flips.items():
        members = np.flatnonzero(labels == source)
        chosen = rng.choice(members, size=round(rate * len(members)), replace=False)
        noisy[chosen] = target
    return noisy
