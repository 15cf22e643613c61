"""The conventional loop: PGD-AT + SGLR trained the way the public code behind the paper's tables trains it, the
bottom rung of the speed ladder (``epochs_per_hour.py``): what a user runs today, timed beside ``fastsglr train``.

Written for this project after the behaviour of
- the authors' SGLS code (github.com/devicerxx/SGLS): ``main_adv.py`` l. 103-128 (a torchvision pipeline,
  ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip()``, ``ToTensor()``, on PIL images in 4 ``DataLoader``
  worker processes with ``pin_memory``; test batches of 4 x the training batch), l. 189-222 (the training epoch:
  ``.item()`` of the loss and of the accuracy every step, ``loss.backward(retain_graph=True)``), l. 277-342 (the
  clean and PGD evaluations of the test set after every epoch, two passes, an ``.item()`` per batch), l. 181-186 and
  ``utils/utils.py`` (a ``torch.save`` checkpoint every epoch); ``losses/loss.py`` class ``SGLS`` l. 51-100 (the
  attack in eval mode, the adversarial forward and, from epoch ``es`` on, a clean forward in train mode, the
  soft-label EMA and the soft-target loss);
- Rice et al.'s code (github.com/locuslab/robust_overfitting ``train_cifar.py``): the same shape of loop, its
  ``.item()`` calls every step (l. 345-348) and its per-epoch PGD evaluation of the test set (l. 353-378).

The model runs eagerly in fp32 (on CUDA, convolutions in TF32: PyTorch's default, which those codes ran with). The
images come from this project's data directory (``train.npz``, ``test.npz``) as PIL images; the crop pads by
meta.json's ``crop_padding`` (4 for 32 x 32 images as in both codes, scaled down for smaller images) and the flip is
there only where meta.json's ``horizontal_flip`` allows it (the digits and the synthetic images are never flipped).
The loss is the released code's, with the numbers of this project's ``sgls-code`` preset (alpha, lam, es; no r, no
T), and epochs count from 1 as in ``main_adv.py``: plain CE while ``epoch < es``.

Where it departs from the released code, and why:
- the PGD evaluation runs `fastsglr train`'s attack (``--eval-steps`` steps of ``--eval-step-size``: 20 of eps / 4
  by default) instead of ``main_adv.py``'s PGD-10 of 2/255, so that the two loops timed side by side do the same
  work; its random start is clamped to [0, 1] as in the released training attack and in Rice et al.'s
  ``attack_pgd`` (l. 87) (``eval_test_pgd``, l. 322, leaves it unclamped) and drawn on the training device as the
  released training attack does (``eval_test_pgd`` draws it on the host and copies it over);
- the loaders shuffle and seed their workers from a generator of their own (seeded by the config's seed), not from
  torch's global one, so the attacks' random starts come from the global generator alone, as in this project's
  engines: one seed then gives both the same starts (the tests compare them).
"""

import time
from typing import NamedTuple

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from fastsglr.data.loaders import read_split
from fastsglr.optim import build_optimizer

WORKERS = 4  # main_adv.py's --workers default
TEST_BATCH_FACTOR = 4  # main_adv.py: test batches of 4 x the training batch


# ---- Data: PIL images through torchvision transforms in worker processes ------------------------------------------


class StoredImages(Dataset):
    """One split of a data directory as PIL images, as the SGLS code's CIFAR10 dataset serves them (its
    ``datasets/datasets.py``: ``Image.fromarray`` per image, then the transform): ``(image, label, index)``."""

    def __init__(self, info, split, transform):
        images, labels = read_split(info, split, fields=("images", "labels"))
        self.images = images[..., 0] if images.shape[3] == 1 else images  # PIL takes grey images as H x W
        self.labels, self.transform = labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i]), i


def pipeline(info, train, augment=True):
    """The transforms of ``main_adv.py`` (l. 103-110) for this data set: crop (padding from meta.json) and flip (where
    meta.json allows it) on training images when ``augment``, then ToTensor (uint8 -> float32 in [0, 1], C x H x W)."""
    steps = []
    if train and augment:
        steps.append(transforms.RandomCrop(info.image_size, padding=info.crop_padding))
        if info.horizontal_flip:
            steps.append(transforms.RandomHorizontalFlip())
    return transforms.Compose([*steps, transforms.ToTensor()])


def make_loaders(info, batch_size, device, *, seed, augment=True, workers=WORKERS):
    """(train, test) DataLoaders as ``main_adv.py`` l. 114-119 builds them: shuffled training batches, the last one
    partial; test batches of 4 x ``batch_size`` in order; worker processes; pinned host memory on CUDA."""
    generator = torch.Generator().manual_seed(seed)
    common = dict(num_workers=workers, pin_memory=torch.device(device).type == "cuda", generator=generator)
    train = DataLoader(
        StoredImages(info, "train", pipeline(info, True, augment)), batch_size=batch_size, shuffle=True, **common
    )
    test = DataLoader(
        StoredImages(info, "test", pipeline(info, False)), batch_size=TEST_BATCH_FACTOR * batch_size, **common
    )
    return train, test


# ---- The released loss ------------------------------------------------------------------------------------------


def pgd_attack(model, x, y, *, eps, step_size, steps):
    """l-inf PGD as ``losses/loss.py`` l. 66-80 crafts it: start uniform in the eps-ball clamped to [0, 1], then
    ``steps`` sign steps of the batch-mean CE's input gradient, each projected to the ball and to [0, 1]. The caller
    sets the BatchNorm mode."""
    x = x.detach()
    x_adv = torch.clamp(x + torch.empty_like(x).uniform_(-eps, eps), 0.0, 1.0)
    for _ in range(steps):
        x_adv.requires_grad_()
        with torch.enable_grad():
            loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, [x_adv])
        x_adv = x_adv.detach() + step_size * torch.sign(grad)
        x_adv = torch.clamp(torch.min(torch.max(x_adv, x - eps), x + eps), 0.0, 1.0)
    return x_adv.detach()


class ReleasedSGLS:
    """``losses/loss.py`` class ``SGLS``: soft labels ``[N, K]`` on the device, one-hot at first; per batch the
    attack in eval mode, the adversarial forward in train mode and, from epoch ``es`` on (epochs from 1), a clean
    forward in train mode (with autograd recording, whose graph is dropped: only its softmax is used), the EMA
    ``soft[i] <- alpha soft[i] + (1 - alpha) (lam softmax(f(x)) + (1 - lam) softmax(f(x_adv)))`` and the batch mean of
    ``sum_k -soft[i]_k log_softmax(f(x_adv))_k``; before ``es``, plain CE.

    Its numbers come from a Config with the ``sgls-code`` preset (``ema_momentum`` is alpha, ``lam``, and ``es`` =
    ``sglr_warmup`` + 1, since that preset counts its warm-up epochs from 0); the released loss has no r and no T."""

    def __init__(self, train_labels, num_classes, cfg, device):
        released = dict(
            labels="sglr", r=1.0, temperature=1.0, ema_init="onehot", method="pgd-at", attack_bn_mode="eval"
        )
        differs = {key: getattr(cfg, key) for key, value in released.items() if getattr(cfg, key) != value}
        if differs:
            raise ValueError(f"the released SGLS loss has no setting {differs}: use the sgls-code preset")
        self.soft_labels = F.one_hot(torch.as_tensor(train_labels, dtype=torch.long), num_classes).float().to(device)
        self.alpha, self.lam, self.es = cfg.ema_momentum, cfg.lam, cfg.sglr_warmup + 1
        self.attack = dict(eps=cfg.eps, step_size=cfg.step_size, steps=cfg.attack_steps)

    def __call__(self, model, x, y, index, epoch):
        """(adversarial logits, loss) of one batch; updates the soft labels of ``index`` from epoch ``es`` on."""
        model.eval()
        x_adv = pgd_attack(model, x, y, **self.attack)
        model.train()
        logits = model(x_adv)
        if epoch < self.es:
            return logits, F.cross_entropy(logits, y)
        prob = F.softmax(logits.detach(), dim=1)
        clean_prob = F.softmax(model(x).detach(), dim=1)
        self.soft_labels[index] = self.alpha * self.soft_labels[index] + (1 - self.alpha) * (
            self.lam * clean_prob + (1 - self.lam) * prob
        )
        return logits, torch.sum(-F.log_softmax(logits, dim=1) * self.soft_labels[index], dim=1).mean()


def train_step(model, optimizer, criterion, images, labels, index, epoch, device):
    """One iteration of ``main_adv.py``'s ``train`` (l. 207-222): the batch to the device, the loss, backward, SGD,
    and the loss and the number of correct adversarial predictions read on the host (each ``.item()`` a sync)."""
    images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
    optimizer.zero_grad()
    logits, loss = criterion(model, images, labels, index, epoch)
    loss.backward(retain_graph=True)
    optimizer.step()
    return loss.item(), (logits.argmax(1) == labels).sum().item()


# ---- The loop ---------------------------------------------------------------------------------------------------


class Pass(NamedTuple):
    """One pass over a loader: perf_counter stamps (before the first batch was asked for, then after each batch,
    whose ``.item()`` has waited for the device), the mean loss and the accuracy in percent."""

    stamps: list
    loss: float
    accuracy: float


def _run(loader, max_batches, step):
    """``step(images, labels, index)`` -> (summed loss, correct) on the loader's batches, the first ``max_batches``
    of them (None: all). The workers' shut-down after the last batch is not in the stamps."""
    stamps, loss, correct, seen = [time.perf_counter()], 0.0, 0, 0
    for i, (images, labels, index) in enumerate(loader):
        if max_batches is not None and i == max_batches:
            break
        batch_loss, batch_correct = step(images, labels, index)
        loss, correct, seen = loss + batch_loss, correct + batch_correct, seen + len(labels)
        stamps.append(time.perf_counter())
    return Pass(stamps, loss / max(seen, 1), 100.0 * correct / max(seen, 1))


class ConventionalLoop:
    """``main_adv.py``'s epoch: train (``train_epoch``), evaluate clean (``validate_clean``) and under PGD
    (``evaluate_pgd``) on the whole test set, save a checkpoint (``save_checkpoint``). ``cfg``: a Config with the
    ``sgls-code`` preset, whose batch size, learning rate, attack, evaluation attack, seed and augmentation it
    reads; ``model`` on ``device``."""

    def __init__(self, cfg, info, model, device, workers=WORKERS):
        self.cfg, self.model, self.device = cfg, model, torch.device(device)
        self.optimizer = build_optimizer(model.parameters(), cfg)
        self.train_loader, self.test_loader = make_loaders(
            info, cfg.batch_size, self.device, seed=cfg.seed, augment=cfg.augment == "flip-crop", workers=workers
        )
        self.criterion = ReleasedSGLS(self.train_loader.dataset.labels, info.num_classes, cfg, self.device)

    def train_epoch(self, epoch, max_batches=None) -> Pass:
        """Epoch ``epoch`` (from 1; SGLR from ``criterion.es`` on) over the first ``max_batches`` batches (None: all),
        at the optimizer's learning rate."""
        self.model.train()

        def step(images, labels, index):
            args = (self.model, self.optimizer, self.criterion, images, labels, index, epoch, self.device)
            loss, correct = train_step(*args)
            return loss * len(labels), correct

        return _run(self.train_loader, max_batches, step)

    def _to_device(self, images, labels):
        return images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)

    def validate_clean(self, max_batches=None) -> Pass:
        """``validate_clean`` (l. 277-312): eval mode, no autograd, the batch-mean CE and accuracy read per batch."""
        self.model.eval()

        def step(images, labels, _):
            images, labels = self._to_device(images, labels)
            with torch.no_grad():
                logits = self.model(images)
                loss = F.cross_entropy(logits, labels)
            return loss.item() * len(labels), (logits.argmax(1) == labels).sum().item()

        return _run(self.test_loader, max_batches, step)

    def evaluate_pgd(self, max_batches=None) -> Pass:
        """``eval_test_pgd`` (l. 315-342) with `fastsglr train`'s evaluation attack (``eval_steps`` steps of
        ``resolved_eval_step_size``): eval mode, the summed CE and the correct count read per batch."""
        self.model.eval()
        attack = dict(eps=self.cfg.eps, step_size=self.cfg.resolved_eval_step_size, steps=self.cfg.eval_steps)

        def step(images, labels, _):
            images, labels = self._to_device(images, labels)
            x_adv = pgd_attack(self.model, images, labels, **attack)
            with torch.no_grad():
                logits = self.model(x_adv)
                loss = F.cross_entropy(logits, labels, reduction="sum")
            return loss.item(), (logits.argmax(1) == labels).sum().item()

        return _run(self.test_loader, max_batches, step)

    def save_checkpoint(self, path, epoch, best):
        """``save_checkpoint`` (``utils/utils.py``): model and optimizer state, one ``torch.save`` per epoch."""
        state = {
            "epoch": epoch,
            "state_dict": self.model.state_dict(),
            "optim_dict": self.optimizer.state_dict(),
            "best_prec1": best,
        }
        torch.save(state, path)
