"""The optimiser and learning-rate schedule of the paper (SGD, momentum 0.9, wd 5e-4, x0.1 at 50% and 75%)."""

import math

import torch


def build_optimizer(params, cfg):
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def milestone_epochs(milestones, epochs) -> list:
    """The epochs (0-based: the first epoch trained at the decayed rate) where the piecewise schedule decays.

    A milestone m is at epoch round(m * epochs), but never at epoch 0 (the first epoch always trains at the full
    rate) and always at least one epoch after the previous one (each rate gets an epoch of its own); one that falls
    at or after the last epoch is dropped. The paper's 200 epochs at 0.5 / 0.75 decay at 100 and 150 exactly; 1
    epoch trains at the full rate, 3 epochs decay once (at epoch 2), 4 epochs twice (at 2 and 3)."""
    found, previous = [], 0
    for m in sorted(milestones):
        previous = max(round(m * epochs), previous + 1)
        if previous < epochs:
            found.append(previous)
    return found


def lr_at(cfg, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Piecewise: constant within an epoch, decayed at each milestone epoch. Cosine: annealed every step."""
    if cfg.schedule == "cosine":
        t = (epoch + step / steps_per_epoch) / cfg.epochs
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * t))
    passed = sum(epoch >= e for e in milestone_epochs(cfg.milestones, cfg.epochs))
    return cfg.lr * cfg.lr_decay**passed
