"""Stochastic weight averaging as Chen et al. (ICLR 2021, "Robust Overfitting may be Mitigated by Properly Learned
Smoothening") run it for KD-SWA, in their code (VITA-Group/Alleviate-Robust-Overfitting, ``main_adv.py`` lines
231-259, ``utils.py``: ``moving_average``, ``bn_update``).

After epoch e (counted from 0) has trained, when e >= swa_start and (e - swa_start) % swa_c_epochs == 0 (defaults 55
of 200 epochs and 1): the average takes the model's parameters with weight 1 / (n + 1), n the models averaged so far
(``moving_average``: parameters only, the first average is a copy); then the averaged model's BatchNorm running
statistics are computed afresh in one pass over the training loader, clean augmented images, train mode
(``bn_update``: mean 0 and var 1 reset, momentum b / (seen + b), i.e. the image-weighted mean of the batches'
statistics). The averaged model is what they evaluate and report from then on; before its start their SWA curve
repeats the model's (``elif args.swa``), and their best SWA checkpoint counts averaged epochs only.

The average is kept as a state dict beside the training model rather than as a second module: the BatchNorm pass
and the evaluation copy it into the training model's own tensors (``swapped_in``), so the fast engine evaluates it
with the graph it compiled (and on CUDA captured) for the model, and the live weights come back bit for bit.
"""

import contextlib

import torch
from torch.nn.modules.batchnorm import _BatchNorm


def first_average_epoch(cfg) -> int:
    """The 0-based epoch after which the first average is taken: ``swa_start`` is a fraction of the epochs (0.275:
    Chen et al.'s epoch 55 of 200), scaled like the learning-rate milestones."""
    return round(cfg.swa_start * cfg.epochs)


@contextlib.contextmanager
def swapped_in(model, state: dict):
    """``model`` holds ``state`` (a full state dict) inside the block, its own weights and buffers again after it.
    load_state_dict copies into the existing tensors: their addresses, which a captured graph reads, stay."""
    live = {name: t.detach().clone() for name, t in model.state_dict().items()}
    model.load_state_dict(state)
    try:
        yield model
    finally:
        model.load_state_dict(live)


def recompute_bn(model, loader) -> None:
    """Chen et al.'s ``bn_update``: BatchNorm running mean 0 and var 1, then one pass over ``loader`` in train mode
    with momentum b / (seen + b), so the statistics end as the image-weighted mean of the batches'. Each module's
    momentum is restored afterwards. (torch.optim.swa_utils.update_bn is the same for equal batches.)"""
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.running_mean.zero_()
        m.running_var.fill_(1.0)
    was_training = model.training
    model.train()
    seen = 0
    with torch.no_grad():
        for batch in loader:
            b = batch.images.shape[0]
            for m in norms:
                m.momentum = b / (seen + b)
            model(batch.images)
            seen += b
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)


class WeightAverage:
    """The SWA state of a run: how many models were averaged and the averaged state dict (parameters averaged, BN
    buffers recomputed for them), which the checkpoint saves whole (``state_dict``)."""

    def __init__(self, cfg):
        self.start, self.every = first_average_epoch(cfg), cfg.swa_every
        self.averaged, self.state = 0, None

    def due(self, epoch: int) -> bool:
        return epoch >= self.start and (epoch - self.start) % self.every == 0

    def update(self, model, loader) -> None:
        """Average ``model``'s parameters in (weight 1 / (n + 1)), then recompute the BN statistics of the average on
        ``loader``; ``model`` keeps its own weights and buffers."""
        alpha = 1.0 / (self.averaged + 1)
        live = model.state_dict()
        average = {name: t.detach().clone() for name, t in live.items()} if self.state is None else self.state
        with torch.no_grad():
            for name, p in model.named_parameters():
                average[name].mul_(1.0 - alpha).add_(p.detach() * alpha)  # moving_average, its two in-place steps
        with swapped_in(model, average):
            recompute_bn(model, loader)
            self.state = {name: t.detach().clone() for name, t in model.state_dict().items()}
        self.averaged += 1

    def state_dict(self) -> dict:
        return {"averaged": self.averaged, "state": self.state}

    def load_state_dict(self, saved: dict) -> None:
        self.averaged, self.state = saved["averaged"], saved["state"]


def reported_weights(state: dict) -> dict:
    """The weights a checkpoint's numbers are of: the average once SWA has averaged a model, else the model's."""
    swa = state.get("swa")
    return swa["state"] if swa and swa["averaged"] else state["model"]
