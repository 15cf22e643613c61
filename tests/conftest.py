"""Shared test set-up: GPU tests skip without a GPU; a small digits data directory is prepared once per session."""
import pytest
import torch


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
