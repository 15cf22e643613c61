"""Label strategies: the label term of the training objective, and the per-sample state some of them keep.

    hard  cross-entropy against the given labels (Madry's PGD-AT, TRADES' natural term)
    ls    label smoothing, target (1 - r) * onehot + r / K
    te    temporal ensembling for AT (Dong et al., ICLR 2022): CE plus a consistency term towards an EMA of past
          predictions of each training sample
    sglr  Self-Guided Label Refinement (the paper, Sec. 3.1, Eq. (6)-(8)): soft-target CE against an EMA table of
          blended clean/adversarial predictions, mixed with the one-hot label

A strategy is an ``nn.Module`` whose per-sample tables are buffers, so ``state_dict()`` checkpoints them with the
model and ``.to(device)`` moves them. ``loss`` runs once per training step inside a compiled graph: it updates the
tables in place with index writes and never syncs with the host. Its numbers (r, T, alpha, lam, the TE momentum and
weight) are 0-d float64 buffers, not Python floats: a compiled iteration reads them from memory, so another value
(another configuration in the same process) neither recompiles nor guards; float64 holds the Python float exactly,
so eager arithmetic rounds as it does with the float. ``loss`` calls the op set it is given (the plain definitions
unless an engine passes its own). Per-epoch settings (SGLR warm-up, TE ramp-up) are set on the host by
``start_epoch``, which the training loop calls at the start of every epoch, resumed runs included.
"""
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastsglr.kernels import PLAIN_OPS, sglr_target

from .errors import UsageError

CE_ON = ("adv", "clean")


def _ce_logits(logits_adv: Tensor, logits_clean: Tensor, ce_on: str) -> Tensor:
    """The logits the label term is applied to: adversarial for PGD-AT, clean for TRADES' natural term."""
    if ce_on == "adv":
        return logits_adv
    if ce_on == "clean":
        return logits_clean
    raise UsageError(f"unknown ce_on '{ce_on}': choose one of {', '.join(CE_ON)}")


class LabelStrategy(nn.Module):
    """The label term of the objective. Subclasses define ``loss`` and, if they have any, per-epoch settings."""

    # Must the objective run a train-mode clean forward whose logits feed the target? If False, the objective
    # passes eval-mode clean logits, which do not touch BatchNorm running statistics.
    needs_clean_logits: bool = False

    def start_epoch(self, epoch: int) -> None:
        """Apply the host-side settings of ``epoch`` (0-based). Nothing to do by default."""

    def sample_tables(self) -> list:
        """The per-sample tables (N x K, indexed by ``index``) that ranks keep in sync under torchrun."""
        return []

    def register_number(self, name: str, value: float) -> None:
        """A hyper-parameter as a 0-d float64 buffer (moved by ``.to(device)``, not checkpointed: it is config)."""
        self.register_buffer(name, torch.tensor(value, dtype=torch.float64), persistent=False)

    def loss(self, logits_adv: Tensor, logits_clean: Tensor, labels: Tensor, index: Tensor, ce_on: str = "adv",
             ops=PLAIN_OPS) -> Tensor:
        """Scalar label loss of the logits named by ``ce_on``; updates per-sample tables in place."""
        raise NotImplementedError


class HardLabels(LabelStrategy):
    """Plain cross-entropy against the (possibly noisy) training labels."""

    def loss(self, logits_adv, logits_clean, labels, index, ce_on="adv", ops=PLAIN_OPS):
        return F.cross_entropy(_ce_logits(logits_adv, logits_clean, ce_on).float(), labels)


class LabelSmoothing(LabelStrategy):
    """Uniform label smoothing: target (1 - r) * onehot + r / K (the paper's PGD-AT + LS baseline uses r = 0.2)."""

    def __init__(self, num_classes: int, r: float):
        super().__init__()
        self.num_classes = num_classes
        self.register_number("r", r)

    def loss(self, logits_adv, logits_clean, labels, index, ce_on="adv", ops=PLAIN_OPS):
        onehot = F.one_hot(labels, self.num_classes).float()
        target = (1 - self.r) * onehot + self.r / self.num_classes
        return ops.soft_cross_entropy(_ce_logits(logits_adv, logits_clean, ce_on), target)


class TemporalEnsembling(LabelStrategy):
    """Temporal ensembling for AT (Dong et al., "Exploring Memorization in Adversarial Training", ICLR 2022).

        p_i   <- m * p_i + (1 - m) * softmax(z_clean_i)           (EMA table ``ensemble``, N x K)
        p^_i   = p_i / sum_k p_ik                                 (bias correction)
        loss   = CE(z, y) + w(epoch) * mean_i ||softmax(z_i) - p^_i||^2,   z = the logits named by ce_on

    Details follow the authors' released code (dongyp13/memorization-AT, ``loss.py``, ``train_te.py``):
    - The table starts at zeros and each batch updates its rows BEFORE they are used (update-then-use).
    - Bias correction by dividing a row by its sum: with zero init a row sums to 1 - m^t after t updates, so this
      equals Laine & Aila's 1 / (1 - m^t) correction without a per-sample counter.
    - The ensembled predictions are of the CLEAN input. For PGD-AT they come from the eval-mode clean forward the
      objective runs anyway, before the attack, exactly as in the released code. For TRADES they are TRADES' own
      train-mode clean logits (the released TRADES_TE runs one more, eval-mode, clean forward for them).
    - The target is a constant (detached); the consistency term pulls on z only. For TRADES it is applied to the
      clean logits, as in the released TRADES_TE.
    - ``mean_i ||.||^2`` sums over classes and averages over the batch. The released code averages over
      batch x classes with weight 300, which equals w = 30 here for K = 10 (and w = 3 for K = 100).
    - w(epoch) = te_weight * exp(-5 (1 - epoch / te_rampup)^2) for epoch < te_rampup, else te_weight (Laine & Aila's
      sigmoid ramp-up). The released code instead keeps w = 0 and the table frozen before epoch 90 and ramps up
      over epochs 90-150; here the table updates from the first epoch.
    - The released attack also maximises the consistency term; here the training attack stays plain PGD-CE.
    """

    def __init__(self, num_train: int, num_classes: int, momentum: float, weight: float, rampup: int):
        super().__init__()
        self.max_weight, self.rampup = weight, rampup
        self.register_number("momentum", momentum)
        self.register_buffer("ensemble", torch.zeros(num_train, num_classes))
        # A device tensor, not a Python float: a compiled step reads it instead of recompiling every epoch.
        self.register_buffer("consistency_weight", torch.tensor(self.weight_at(0)), persistent=False)

    def weight_at(self, epoch: int) -> float:
        """The ramped-up consistency weight w(epoch)."""
        if epoch >= self.rampup:
            return self.max_weight
        return self.max_weight * math.exp(-5.0 * (1.0 - epoch / self.rampup) ** 2)

    def start_epoch(self, epoch: int) -> None:
        self.consistency_weight.fill_(self.weight_at(epoch))

    def sample_tables(self) -> list:
        return [self.ensemble]

    def loss(self, logits_adv, logits_clean, labels, index, ce_on="adv", ops=PLAIN_OPS):
        z = _ce_logits(logits_adv, logits_clean, ce_on).float()
        prob = torch.softmax(logits_clean.detach().float(), dim=1)
        rows = self.momentum * self.ensemble[index] + (1 - self.momentum) * prob
        self.ensemble[index] = rows
        target = rows / rows.sum(dim=1, keepdim=True)
        consistency = (torch.softmax(z, dim=1) - target).square().sum(dim=1).mean()
        return F.cross_entropy(z, labels) + self.consistency_weight * consistency


class SelfGuidedLabelRefinement(LabelStrategy):
    """SGLR, Eq. (6)-(8) of the paper (Sec. 3.1; the table's start and warm-up also as in the authors' released
    ``main_adv.py``).

        f~     = lam * softmax(z_clean / T) + (1 - lam) * softmax(z_adv / T)
        p~_i  <- alpha * p~_i + (1 - alpha) * f~                  (EMA table ``table``, N x K, update-then-use)
        y      = r * p~_i + (1 - r) * onehot(y_i)
        loss   = mean_i sum_k -y_ik log_softmax(z)_ik,            z = the logits named by ce_on

    The table starts at the one-hot of the training labels the model trains on (noisy ones included; the released
    code) or at zeros (the paper's Algorithm 1). Before epoch ``warmup`` the loss is plain hard CE and the table is
    not touched; during warm-up ``needs_clean_logits`` is False, so, as in the released code, no train-mode clean
    forward runs and PGD-AT + SGLR is exactly PGD-AT until refinement starts.
    """

    def __init__(self, train_labels: Tensor, num_classes: int, r: float, temperature: float, alpha: float,
                 lam: float, init: str, warmup: int):
        super().__init__()
        self.warmup = warmup
        for name, value in (("r", r), ("temperature", temperature), ("alpha", alpha), ("lam", lam)):
            self.register_number(name, value)
        if init == "onehot":
            table = F.one_hot(train_labels.long(), num_classes).float()
        elif init == "zeros":
            table = torch.zeros(len(train_labels), num_classes, device=train_labels.device)
        else:
            raise UsageError(f"unknown ema init '{init}': choose onehot or zeros")
        self.register_buffer("table", table)
        self.refining = warmup == 0

    @property
    def needs_clean_logits(self) -> bool:
        return self.refining

    def start_epoch(self, epoch: int) -> None:
        self.refining = epoch >= self.warmup

    def sample_tables(self) -> list:
        return [self.table]

    def loss(self, logits_adv, logits_clean, labels, index, ce_on="adv", ops=PLAIN_OPS):
        z = _ce_logits(logits_adv, logits_clean, ce_on)
        if not self.refining:
            return F.cross_entropy(z.float(), labels)
        args = (self.r, self.temperature, self.alpha, self.lam)
        if ce_on == "adv":
            return ops.sglr_loss(logits_adv, logits_clean, labels, index, self.table, *args)
        # TRADES + SGLR: the same target and table update, but the CE is on the clean logits.
        y, rows = sglr_target(logits_adv, logits_clean, labels, self.table[index], *args)
        self.table[index] = rows.to(self.table.dtype)
        return ops.soft_cross_entropy(logits_clean, y)


def build_label_strategy(cfg, train_labels: Tensor, num_classes: int) -> LabelStrategy:
    """The strategy named by ``cfg.labels``, its tables on ``train_labels``' device (one row per training sample)."""
    if cfg.labels == "hard":
        strategy = HardLabels()
    elif cfg.labels == "ls":
        strategy = LabelSmoothing(num_classes, cfg.r)
    elif cfg.labels == "te":
        strategy = TemporalEnsembling(len(train_labels), num_classes, cfg.ema_momentum, cfg.te_weight, cfg.te_rampup)
    elif cfg.labels == "sglr":
        strategy = SelfGuidedLabelRefinement(train_labels, num_classes, cfg.r, cfg.temperature, cfg.ema_momentum,
                                             cfg.lam, cfg.ema_init, cfg.sglr_warmup)
    else:
        raise UsageError(f"unknown label strategy '{cfg.labels}': choose one of hard, ls, te, sglr")
    return strategy.to(train_labels.device)
