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

    def attack_term(self, logits_clean: Tensor, index: Tensor):
        """What PGD-AT's training attack maximises besides CE: a function of the logits, summed over the batch, or
        None (plain CE). Called before the attack with the eval-mode clean logits, for strategies that do not
        ``needs_clean_logits``."""

    def sample_tables(self) -> list:
        """The per-sample tables (N x K, indexed by ``index``) that ranks keep in sync under torchrun."""
        return []

    def register_number(self, name: str, value: float) -> None:
        """A hyper-parameter as a 0-d float64 buffer (moved by ``.to(device)``, not checkpointed: it is config)."""
        self.register_buffer(name, torch.tensor(value, dtype=torch.float64), persistent=False)

    def loss(
        self, logits_adv: Tensor, logits_clean: Tensor, labels: Tensor, index: Tensor, ce_on: str = "adv", ops=PLAIN_OPS
    ) -> Tensor:
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
    """Temporal ensembling for AT (Dong et al., "Exploring Memorization in Adversarial Training", ICLR 2022), as
    their released code runs it (dongyp13/memorization-AT, ``train_te.py`` and ``loss.py``, class ``PGD_TE``).

        p_i   <- m * p_i + (1 - m) * softmax(z_clean_i)           (EMA table ``ensemble``, N x K)
        p^_i   = p_i / sum_k p_ik                                 (bias correction)
        loss   = CE(z, y) + w(e) * mean_{i,k} (softmax(z_i) - p^_i)_k^2,   z = the logits named by ce_on

    - Epochs are counted from 1 as theirs (``train_te.py`` l. 266): epoch e of theirs is our 0-based e - 1.
    - w(e) = 0 for e < start, te_weight * exp(-5 (1 - (e - start) / (end - start))^2) for start <= e < end, and
      te_weight from e = end on (``sigmoid_rampup``, ``train_te.py`` l. 212-221, 268-269; with end <= start a step
      at start). start and end are the fractions ``te_start``, ``te_end`` of the run's epochs, rounded: 90 and 150
      of 200 as their ``--start-es`` / ``--end-es`` (l. 70, 72).
    - The mean runs over batch x classes, so the default weight 300 is their ``--reg-weight`` (l. 74; ``loss.py``
      l. 101, 122), and the term's size relative to CE shrinks as K grows.
    - The table starts at zeros (``loss.py`` l. 73), is frozen before epoch start and, from it on, each batch updates
      its rows BEFORE they are used (l. 86-89). Frozen is a 0/1 device tensor (``updating``) choosing between the
      updated and the old rows, so one compiled graph serves every epoch; before start the target comes from the
      would-be rows (a finite number: the zero table would divide 0 by 0) and w = 0 cancels it.
    - Bias correction by dividing a row by its sum (l. 89): a row sums to 1 - m^t after t updates, Laine & Aila's
      1 / (1 - m^t) without a per-sample counter.
    - The ensembled predictions are of the CLEAN input. For PGD-AT they come from the eval-mode clean forward the
      objective runs anyway, before the attack, as in ``loss.py`` l. 82-84. For TRADES they are TRADES' own
      train-mode clean logits (their ``TRADES_TE`` runs one more, eval-mode, clean forward for them, l. 23-25).
    - The target is a constant (detached); the consistency term pulls on z only. For TRADES it is applied to the
      clean logits, as in their ``TRADES_TE`` (l. 64).
    - PGD-AT's training attack maximises CE + w * the consistency term of the adversarial logits (``loss.py``
      l. 100-101; ``attack_term``). TRADES' attack stays TRADES' KL.
    """

    def __init__(self, num_train: int, num_classes: int, momentum: float, weight: float, start: int, end: int):
        super().__init__()
        self.max_weight, self.start, self.end = weight, start, end
        self.register_number("momentum", momentum)
        self.register_buffer("ensemble", torch.zeros(num_train, num_classes))
        # Device tensors, not Python numbers: a compiled step reads them instead of recompiling every epoch.
        self.register_buffer("consistency_weight", torch.tensor(self.weight_at(0)), persistent=False)
        self.register_buffer("updating", torch.tensor(self.updates_at(0)), persistent=False)

    def updates_at(self, epoch: int) -> bool:
        """Does the table update in ``epoch`` (0-based)? From the authors' epoch ``start`` on."""
        return epoch + 1 >= self.start

    def weight_at(self, epoch: int) -> float:
        """The ramped-up consistency weight w of ``epoch`` (0-based)."""
        e = epoch + 1
        if e < self.start:
            return 0.0
        if e >= self.end:
            return self.max_weight
        return self.max_weight * math.exp(-5.0 * (1.0 - (e - self.start) / (self.end - self.start)) ** 2)

    def start_epoch(self, epoch: int) -> None:
        self.consistency_weight.fill_(self.weight_at(epoch))
        self.updating.fill_(self.updates_at(epoch))

    def sample_tables(self) -> list:
        return [self.ensemble]

    def _rows(self, logits_clean: Tensor, index: Tensor) -> Tensor:
        """The batch's table rows after this step's update."""
        prob = torch.softmax(logits_clean.detach().float(), dim=1)
        return self.momentum * self.ensemble[index] + (1 - self.momentum) * prob

    def _consistency(self, logits: Tensor, target: Tensor) -> Tensor:
        """Per-sample mean over classes of (softmax(z) - p^)^2."""
        return (torch.softmax(logits.float(), dim=1) - target).square().mean(dim=1)

    def attack_term(self, logits_clean, index):
        rows = self._rows(logits_clean, index)
        target = rows / rows.sum(dim=1, keepdim=True)
        return lambda logits: self.consistency_weight * self._consistency(logits, target).sum()

    def loss(self, logits_adv, logits_clean, labels, index, ce_on="adv", ops=PLAIN_OPS):
        z = _ce_logits(logits_adv, logits_clean, ce_on).float()
        rows = self._rows(logits_clean, index)
        self.ensemble[index] = torch.where(self.updating, rows, self.ensemble[index])
        target = rows / rows.sum(dim=1, keepdim=True)
        return F.cross_entropy(z, labels) + self.consistency_weight * self._consistency(z, target).mean()


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

    def __init__(
        self,
        train_labels: Tensor,
        num_classes: int,
        r: float,
        temperature: float,
        alpha: float,
        lam: float,
        init: str,
        warmup: int,
    ):
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
        strategy = TemporalEnsembling(
            len(train_labels),
            num_classes,
            cfg.ema_momentum,
            cfg.te_weight,
            round(cfg.te_start * cfg.epochs),
            round(cfg.te_end * cfg.epochs),
        )
    elif cfg.labels == "sglr":
        strategy = SelfGuidedLabelRefinement(
            train_labels, num_classes, cfg.r, cfg.temperature, cfg.ema_momentum, cfg.lam, cfg.ema_init, cfg.sglr_warmup
        )
    else:
        raise UsageError(f"unknown label strategy '{cfg.labels}': choose one of hard, ls, te, sglr")
    return strategy.to(train_labels.device)
