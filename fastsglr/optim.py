"""The optimiser and learning-rate schedule of the paper (SGD, momentum 0.9, wd 5e-4, x0.1 at 50% and 75%)."""
import math

import torch


def build_optimizer(params, cfg):
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_at(cfg, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Piecewise: constant within an epoch, decayed at each milestone epoch. Cosine: annealed every step."""
    if cfg.schedule == "cosine":
        t = (epoch + step / steps_per_epoch) / cfg.epochs
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * t))
    passed = sum(epoch >= round(m * cfg.epochs) for m in cfg.milestones)
    return cfg.lr * cfg.lr_decay ** passed
