"""bench/conventional_loop.py computes what it claims: its training steps give the weights, BatchNorm statistics and
SGLR table of this project's reference engine with the `sgls-code` preset, its PGD evaluation the accuracies of this
project's evaluation (both from one seed), and its data pipeline yields the stored images (ToTensor's scaling, crops
of the zero-padded image, flips only where meta.json allows them, each with its own label and index)."""

import copy
import dataclasses
import importlib
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from fastsglr import evaluation
from fastsglr.attacks import pgd
from fastsglr.config import Config, apply_preset
from fastsglr.data.datadir import read_data_dir
from fastsglr.data.loaders import Batch, read_split
from fastsglr.engine.reference import ReferenceEngine
from fastsglr.labels import build_label_strategy
from fastsglr.metrics import TrainMeter
from fastsglr.models import build_model
from fastsglr.optim import build_optimizer

pytest.importorskip("torchvision")


@pytest.fixture(scope="module")
def conventional():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        yield importlib.import_module("conventional_loop")
    finally:
        sys.path.pop(0)


def _sgls_code(**overrides):
    return apply_preset(Config(model="smallcnn", **overrides), "sgls-code")


def _model(info_like, seed=0):
    classes, channels, size = info_like
    torch.manual_seed(seed)
    return build_model("smallcnn", classes, channels, size, (0.5, 0.4, 0.3)[:channels], (0.2, 0.25, 0.3)[:channels])


# Measured on this project's 2-core CPU (torch 2.14.1): the two loops agree bit for bit (largest difference 0.0);
# the tolerance leaves room for another CPU's BLAS, far below what a wrong loss or attack moves (> 1e-3 here).
TOL = dict(rtol=0, atol=1e-6)


@pytest.mark.parametrize("epoch", [89, 90], ids=["plain CE before es", "SGLR from es"])
def test_training_steps_match_the_reference_engine(conventional, epoch):
    """Two steps (SGD momentum carried over, overlapping rows of the table) from the same weights on the same fresh
    batches: the released loss at epoch ``epoch`` (from 1; es = 90) against the reference engine with the sgls-code
    preset at epoch ``epoch - 1`` (from 0), the attacks' random starts drawn from one seed."""
    n, k, b = 64, 10, 16
    g = torch.Generator().manual_seed(epoch)
    train_labels = torch.randint(0, k, (n,), generator=g)
    batches = [(torch.rand(b, 3, 16, 16, generator=g), torch.randperm(n, generator=g)[:b]) for _ in range(2)]
    cfg = _sgls_code(batch_size=b, attack_steps=3, lr=0.5)

    model = _model((k, 3, 16))
    mine = copy.deepcopy(model)
    strategy = build_label_strategy(cfg, train_labels, k)
    strategy.start_epoch(epoch - 1)
    engine = ReferenceEngine(model, build_optimizer(model.parameters(), cfg), strategy, cfg)
    criterion = conventional.ReleasedSGLS(train_labels.numpy(), k, cfg, "cpu")
    optimizer = build_optimizer(mine.parameters(), cfg)
    for step, (images, index) in enumerate(batches):
        labels = train_labels[index]
        torch.manual_seed(100 + step)
        expected = engine.step(Batch(images, labels, labels, index), TrainMeter("cpu"), step)
        torch.manual_seed(100 + step)
        loss, correct = conventional.train_step(mine, optimizer, criterion, images, labels, index, epoch, "cpu")
        torch.testing.assert_close(torch.tensor(loss), expected, **TOL)
        assert 0 <= correct <= b
    for (name, a), b_ in zip(model.state_dict().items(), mine.state_dict().values()):
        torch.testing.assert_close(b_, a, **TOL, msg=name)
    torch.testing.assert_close(criterion.soft_labels, strategy.table, **TOL)
    touched = torch.cat([index for _, index in batches]).unique()
    onehot = F.one_hot(train_labels, k).float()
    if epoch < criterion.es:  # plain CE: the table stays one-hot
        assert torch.equal(criterion.soft_labels, onehot)
    else:  # the visited rows moved off their one-hot start, the others did not
        assert (criterion.soft_labels[touched] - onehot[touched]).abs().amax(dim=1).min() > 1e-3
        rest = torch.ones(n, dtype=torch.bool)
        rest[touched] = False
        assert torch.equal(criterion.soft_labels[rest], onehot[rest])


def test_released_loss_refuses_what_it_does_not_have(conventional):
    labels = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="temperature"):
        conventional.ReleasedSGLS(labels, 10, dataclasses.replace(_sgls_code(), temperature=1.5), "cpu")
    with pytest.raises(ValueError, match="'r': 0.2"):
        conventional.ReleasedSGLS(labels, 10, apply_preset(Config(), "paper"), "cpu")


def test_pgd_evaluation_matches_the_project_evaluation(conventional, digits_dir):
    """A checkpoint after a few conventional training steps, evaluated by both with one attack seed: the same
    adversarial batch and the same clean and PGD accuracies over the whole digits test split."""
    info = read_data_dir(digits_dir)
    cfg = _sgls_code(batch_size=16, eps=32 / 255, eval_steps=5)
    model = _model((info.num_classes, info.in_channels, info.image_size))
    loop = conventional.ConventionalLoop(cfg, info, model, "cpu", workers=0)
    loop.train_epoch(1, max_batches=8)

    images, labels, _ = next(iter(loop.test_loader))
    attack = dict(eps=cfg.eps, step_size=cfg.resolved_eval_step_size, steps=cfg.eval_steps)
    model.eval()
    torch.manual_seed(3)
    mine = conventional.pgd_attack(model, images, labels, **attack)
    torch.manual_seed(3)
    theirs = pgd(model, images, labels, **{**attack, "eps": torch.tensor(cfg.eps, dtype=torch.float64)})
    assert torch.equal(mine, theirs)
    assert (mine - images).abs().max() == pytest.approx(cfg.eps, abs=1e-6)  # the attack moved the batch

    torch.manual_seed(5)
    clean, adv = loop.validate_clean(), loop.evaluate_pgd()
    batches = [Batch(x, y, y, i) for x, y, i in loop.test_loader]
    torch.manual_seed(5)
    row = evaluation.evaluate(model, batches, device="cpu", **attack)
    assert (clean.accuracy, adv.accuracy) == pytest.approx((row["test_clean_acc"], row["test_pgd_acc"]), abs=1e-9)
    assert adv.accuracy < clean.accuracy
    assert len(clean.stamps) == len(adv.stamps) == len(batches) + 1


def _windows(stored, padding):
    """Every crop of the zero-padded ``stored`` images (N, C, H, W): (offsets, N, C, H, W)."""
    h, w = stored.shape[2:]
    padded = F.pad(stored, (padding,) * 4)
    offsets = range(2 * padding + 1)
    return torch.stack([padded[:, :, dy : dy + h, dx : dx + w] for dy in offsets for dx in offsets])


@pytest.mark.parametrize("flip", [False, True], ids=["meta.json: no flip", "meta.json: flip"])
def test_pipeline_yields_the_stored_images(conventional, digits_dir, flip):
    """One epoch of the training loader (two worker processes) and the test loader over the digits (8 x 8, crop
    padding 1): ToTensor's scaling of the stored uint8 pixels, the sample's own label and index, every training image
    a crop of its zero-padded stored image, flipped only where meta.json allows it."""
    info = dataclasses.replace(read_data_dir(digits_dir), horizontal_flip=flip)
    train, test = conventional.make_loaders(info, 64, "cpu", seed=3, workers=2)
    stored_test, test_labels = read_split(info, "test", fields=("images", "labels"))
    x, y, index = next(iter(test))
    assert x.dtype == torch.float32 and x.shape == (256, 1, 8, 8)
    assert torch.equal(x, torch.from_numpy(stored_test[:256]).permute(0, 3, 1, 2).float() / 255)
    assert torch.equal(index, torch.arange(256)) and torch.equal(y, torch.from_numpy(test_labels[:256]))

    stored, labels = (torch.from_numpy(a) for a in read_split(info, "train", fields=("images", "labels")))
    stored = stored.permute(0, 3, 1, 2).float() / 255
    x, y, index = (torch.cat(parts) for parts in zip(*train))
    assert torch.equal(index.sort().values, torch.arange(len(labels)))  # each image once, the last batch partial
    assert torch.equal(y, labels[index])
    windows = _windows(stored[index], info.crop_padding)
    plain = (windows == x).flatten(2).all(dim=2)  # (offset, sample): the image is this crop
    mirrored = (windows.flip(-1) == x).flatten(2).all(dim=2)
    assert (plain | mirrored).any(dim=0).all(), "every image is a crop of its own padded stored image"
    only_mirrored = mirrored.any(dim=0) & ~plain.any(dim=0)
    assert only_mirrored.any() == flip
    centre = (len(windows) - 1) // 2
    assert (~plain[centre] & ~mirrored[centre]).float().mean() > 0.5, "most images are shifted crops"
