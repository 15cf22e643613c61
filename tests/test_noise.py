"""Label noise: the paper's symmetric noise (labels resampled over all K classes) against its definition's
binomial statistics; the exact-flip variant's exact realised rates, really-changed labels and uniform targets; the
standard asymmetric maps (spelled out here by class name, independently of the implementation); reproducibility
and errors."""

import numpy as np
import pytest
from scipy.stats import binom

from fastsglr.data.noise import NOISE_TYPES, corrupt_labels
from fastsglr.errors import UsageError

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_FLIPS_BY_NAME = {"truck": "automobile", "bird": "airplane", "deer": "horse", "cat": "dog", "dog": "cat"}


def _labels(n, k, seed=0):
    return np.random.default_rng(seed).integers(0, k, n)


def test_noise_types():
    assert NOISE_TYPES == ("symmetric", "symmetric-flip", "asymmetric")


@pytest.mark.parametrize("n,k,rate", [(200_000, 10, 0.4), (100_000, 3, 0.8), (60_000, 100, 0.2)])
def test_symmetric_resamples_over_all_classes(n, k, rate):
    """The paper's definition (Sec. 4) and the authors' code: a share `rate` of the samples gets a label drawn
    uniformly from all K classes. So P(noisy = j | clean = c) is rate / K for j != c and 1 - rate + rate / K for
    j = c, and the wrong-label share is rate * (K - 1) / K. Each count is checked against its binomial distribution:
    both one-sided tail probabilities of the observed count must exceed 1e-4 / (number of counts checked), a
    family-wise false alarm of at most 1e-4 (drawing exactly int(rate * N) samples only narrows the spread)."""
    labels = _labels(n, k, seed=2)
    before = labels.copy()
    noisy = corrupt_labels(labels, k, rate, "symmetric", seed=3)
    np.testing.assert_array_equal(labels, before)  # input untouched
    assert noisy.dtype == np.int64 and noisy.shape == labels.shape and 0 <= noisy.min() and noisy.max() < k

    checks = 1 + k * k

    def within_binomial(count, trials, p):
        return min(binom.cdf(count, trials, p), binom.sf(count - 1, trials, p)) > 1e-4 / checks

    chosen = int(rate * n)
    wrong = int((noisy != labels).sum())
    assert within_binomial(wrong, chosen, (k - 1) / k), (wrong, chosen * (k - 1) / k)
    table = np.zeros((k, k), dtype=np.int64)
    np.add.at(table, (labels, noisy), 1)
    members = np.bincount(labels, minlength=k)
    for c in range(k):
        for j in range(k):
            p = 1 - rate + rate / k if j == c else rate / k
            assert within_binomial(table[c, j], members[c], p), (c, j, table[c, j], members[c] * p)


def test_symmetric_is_reproducible_exactly_per_seed():
    labels = _labels(5000, 10)
    a = corrupt_labels(labels, 10, 0.4, "symmetric", seed=7)
    np.testing.assert_array_equal(a, corrupt_labels(labels, 10, 0.4, "symmetric", seed=7))
    assert not np.array_equal(a, corrupt_labels(labels, 10, 0.4, "symmetric", seed=8))
    # not the exact-flip variant: some resampled labels came back to their true class
    assert (a != labels).sum() < int(0.4 * 5000)


@pytest.mark.parametrize("n,k,rate", [(10_000, 10, 0.37), (999, 100, 0.2), (7, 3, 0.5), (50, 2, 0.8)])
def test_symmetric_flip_realised_rate_is_exact_and_every_chosen_label_changes(n, k, rate):
    labels = _labels(n, k)
    before = labels.copy()
    noisy = corrupt_labels(labels, k, rate, "symmetric-flip", seed=1)
    np.testing.assert_array_equal(labels, before)  # input untouched
    assert noisy.dtype == np.int64 and noisy.shape == labels.shape
    assert noisy.min() >= 0 and noisy.max() < k
    # only round(rate*N) samples are touched, so this many differing labels means every touched one changed
    assert (noisy != labels).sum() == round(rate * n)


def test_symmetric_flip_targets_uniform_over_other_classes_and_choice_uniform_over_samples():
    n, k, rate = 200_000, 10, 0.4
    labels = _labels(n, k, seed=2)
    noisy = corrupt_labels(labels, k, rate, "symmetric-flip", seed=3)
    changed = noisy != labels

    # (original, new) table over the k*(k-1) off-diagonal cells: a loose chi-square (df = 89, mean 89, sd ~13)
    table = np.zeros((k, k))
    np.add.at(table, (labels[changed], noisy[changed]), 1)
    assert np.trace(table) == 0
    off = table[~np.eye(k, dtype=bool)]
    expected = np.outer(np.bincount(labels[changed], minlength=k), np.ones(k))[~np.eye(k, dtype=bool)] / (k - 1)
    chi2 = ((off - expected) ** 2 / expected).sum()
    assert chi2 < 89 + 8 * 13, chi2

    # the corrupted samples are spread evenly over positions and over original classes
    halves = changed.reshape(2, -1).mean(axis=1)
    np.testing.assert_allclose(halves, rate, atol=0.01)
    per_class = np.bincount(labels[changed], minlength=k) / np.bincount(labels, minlength=k)
    np.testing.assert_allclose(per_class, rate, atol=0.02)


@pytest.mark.parametrize(
    "kind,dataset,k",
    [("symmetric", "synthetic", 10), ("symmetric-flip", "synthetic", 10), ("asymmetric", "cifar10", 10)],
)
def test_reproducible_per_seed(kind, dataset, k):
    labels = _labels(5000, k)
    a = corrupt_labels(labels, k, 0.3, kind, seed=7, dataset=dataset)
    b = corrupt_labels(labels, k, 0.3, kind, seed=7, dataset=dataset)
    c = corrupt_labels(labels, k, 0.3, kind, seed=8, dataset=dataset)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("kind,dataset", [("symmetric", ""), ("symmetric-flip", ""), ("asymmetric", "cifar10")])
def test_rate_zero_is_an_unchanged_copy(kind, dataset):
    labels = _labels(300, 10)
    noisy = corrupt_labels(labels, 10, 0.0, kind, seed=0, dataset=dataset)
    np.testing.assert_array_equal(noisy, labels)
    noisy[0] = (noisy[0] + 1) % 10
    assert noisy[0] != labels[0]  # a copy, not a view


def test_asymmetric_cifar10_standard_map():
    rate = 0.45
    labels = _labels(30_000, 10, seed=4)
    noisy = corrupt_labels(labels, 10, rate, "asymmetric", seed=5, dataset="cifar10")
    index = {name: i for i, name in enumerate(CIFAR10_NAMES)}
    for name in CIFAR10_NAMES:
        members = labels == index[name]
        changed = members & (noisy != labels)
        if name in CIFAR10_FLIPS_BY_NAME:
            assert changed.sum() == round(rate * members.sum()), name
            assert np.all(noisy[changed] == index[CIFAR10_FLIPS_BY_NAME[name]]), name
        else:
            np.testing.assert_array_equal(noisy[members], labels[members], err_msg=name)
    # cat <-> dog: a cat moved to dog is not moved back, so both directions show up
    assert ((labels == index["cat"]) & (noisy == index["dog"])).any()
    assert ((labels == index["dog"]) & (noisy == index["cat"])).any()


def _next_in_superclass_reference(superclass):
    """Spelled out with plain lists: sort each superclass's fine classes, map each to the next, wrapping around."""
    mapping = {}
    for coarse in set(superclass.tolist()):
        members = sorted(f for f in range(len(superclass)) if superclass[f] == coarse)
        for i, f in enumerate(members):
            mapping[f] = members[(i + 1) % len(members)]
    return mapping


def test_asymmetric_cifar100_next_class_within_superclass():
    rng = np.random.default_rng(6)
    superclass = rng.permutation(np.repeat(np.arange(20), 5))
    labels = rng.integers(0, 100, 20_000)
    rate = 0.3
    noisy = corrupt_labels(labels, 100, rate, "asymmetric", seed=9, superclass=superclass, dataset="cifar100")
    mapping = _next_in_superclass_reference(superclass)
    for fine in range(100):
        members = labels == fine
        changed = members & (noisy != labels)
        assert changed.sum() == round(rate * members.sum()), fine
        assert np.all(noisy[changed] == mapping[fine]), fine
    assert np.all(superclass[noisy] == superclass[labels])  # never leaves the superclass


def test_asymmetric_cifar100_needs_superclass():
    with pytest.raises(ValueError, match="superclass"):
        corrupt_labels(_labels(100, 100), 100, 0.2, "asymmetric", seed=0, dataset="cifar100")


@pytest.mark.parametrize("rate", [1.2, 1.0, -0.1, float("nan")])
def test_rate_out_of_range_is_usage_error(rate):
    with pytest.raises(UsageError, match=r"--label-noise .* is out of range: it must lie in \[0, 1\)") as err:
        corrupt_labels(_labels(10, 10), 10, rate, "symmetric", seed=0)
    assert str(rate) in str(err.value)


def test_unknown_kind_names_the_choices():
    with pytest.raises(UsageError, match="symmetric, symmetric-flip, asymmetric"):
        corrupt_labels(_labels(10, 10), 10, 0.2, "pairflip", seed=0)


@pytest.mark.parametrize("dataset", ["digits", "synthetic", ""])
def test_asymmetric_only_for_cifar(dataset):
    with pytest.raises(UsageError, match="asymmetric noise is defined for cifar10 and cifar100 only"):
        corrupt_labels(_labels(10, 10), 10, 0.2, "asymmetric", seed=0, dataset=dataset)
