"""Shared test set-up: without a GPU, Triton kernels run in the interpreter; GPU tests skip without a GPU; small
digits data directories are prepared once per session."""

import os

import pytest
import torch

# Without a CUDA device the Triton kernels run in the interpreter, on CPU tensors; with one they are compiled, so
# `pytest -m gpu` tests the real kernels. Triton reads the variable when the kernels are decorated, i.e. at the
# first import of fastsglr.kernels: this runs before any test module imports fastsglr. torch.cuda.is_available()
# asks the driver for a device count without creating a CUDA context.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run bench/gpu_suite.sh on a GPU box)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    """digits written by `prepare` (1,347 train / 450 test 8x8 grey images), shared by the data and training tests."""
    from fastsglr.data.prepare import prepare

    out = tmp_path_factory.mktemp("digits")
    prepare("digits", str(out), log=lambda *_: None)
    return str(out)


@pytest.fixture(scope="session")
def noisy_digits_dir(tmp_path_factory):
    """digits with 30% symmetric label noise on the training split."""
    from fastsglr.data.prepare import prepare

    out = tmp_path_factory.mktemp("noisy_digits")
    prepare("digits", str(out), label_noise=0.3, seed=1, log=lambda *_: None)
    return str(out)
