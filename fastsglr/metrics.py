"""Metrics that accumulate on the device (no host sync per step) and are read once per epoch."""

import math

import torch

from .distributed import min_over_ranks_, sum_over_ranks_

# The columns of TrainMeter's accumulator, in order.
TRAIN_SUMS = (
    "loss",
    "count",
    "adv_correct",
    "clean_correct",
    "adv_correct_true",
    "clean_correct_true",
    "corrupted",
    "adv_correct_untouched",
    "adv_memorized_corrupted",
    "adv_correct_corrupted_true",
    "grad_norm",
    "steps",
)
NO_BAD_STEP = 2**62  # TrainMeter.first_bad_step while every loss was finite


class TrainMeter:
    """Sums of per-step training statistics in one float64 device vector, so updating never syncs."""

    def __init__(self, device):
        self.sums = torch.zeros(len(TRAIN_SUMS), dtype=torch.float64, device=device)
        # The first step whose loss was not finite (a large sentinel while all are finite), found without a sync.
        self.first_bad_step = torch.full((), NO_BAD_STEP, dtype=torch.int64, device=device)

    def reset(self):
        """Back to a fresh meter, in place (a captured CUDA graph keeps writing to the same tensors)."""
        self.sums.zero_()
        self.first_bad_step.fill_(NO_BAD_STEP)

    def load_(self, other: "TrainMeter"):
        """Take ``other``'s sums, in place (a resumed epoch goes on from its meter; a fresh one is a reset)."""
        self.sums.copy_(other.sums)
        self.first_bad_step.copy_(other.first_bad_step)

    def update(self, loss, logits_adv, logits_clean, labels, clean_labels, grad_norm, step):
        pred_adv, pred_clean = logits_adv.argmax(1), logits_clean.argmax(1)
        corrupted = labels != clean_labels
        untouched = ~corrupted
        B = labels.shape[0]
        row = torch.stack(
            [
                loss.detach().double() * B,
                torch.full((), B, dtype=torch.float64, device=labels.device),  # a fill, not a host copy: capturable
                (pred_adv == labels).sum().double(),
                (pred_clean == labels).sum().double(),
                (pred_adv == clean_labels).sum().double(),
                (pred_clean == clean_labels).sum().double(),
                corrupted.sum().double(),
                ((pred_adv == labels) & untouched).sum().double(),
                ((pred_adv == labels) & corrupted).sum().double(),
                ((pred_adv == clean_labels) & corrupted).sum().double(),
                grad_norm.detach().double(),
                torch.ones((), dtype=torch.float64, device=labels.device),
            ]
        )
        self.sums += row
        bad = ~torch.isfinite(loss.detach())
        # In place, like the sums: a captured CUDA graph reads and writes the tensor it saw at capture.
        self.first_bad_step.copy_(
            torch.where(bad, torch.minimum(self.first_bad_step, torch.as_tensor(step)), self.first_bad_step)
        )

    def read(self) -> dict:
        """One host sync: the epoch's averages over every rank, accuracies in percent."""
        sums = self.sums.clone()
        sum_over_ranks_(sums)
        s = dict(zip(TRAIN_SUMS, sums.tolist()))
        n, corrupted = max(s["count"], 1.0), s["corrupted"]

        def pct(a, b):
            return 100.0 * a / b if b else float("nan")

        return {
            "train_loss": s["loss"] / n,
            "train_adv_acc": pct(s["adv_correct"], n),
            "train_clean_acc": pct(s["clean_correct"], n),
            "train_adv_acc_vs_clean_labels": pct(s["adv_correct_true"], n),
            "train_clean_acc_vs_clean_labels": pct(s["clean_correct_true"], n),
            "train_adv_acc_untouched": pct(s["adv_correct_untouched"], n - corrupted),
            "train_adv_memorized_corrupted": pct(s["adv_memorized_corrupted"], corrupted),
            "train_adv_acc_corrupted_vs_clean_labels": pct(s["adv_correct_corrupted_true"], corrupted),
            "grad_norm": s["grad_norm"] / max(s["steps"], 1.0),
        }

    def first_nonfinite_step(self):
        """The first step (on any rank) whose loss was not finite, or None."""
        first = self.first_bad_step.clone()
        min_over_ranks_(first)
        step = int(first)
        return None if step == NO_BAD_STEP else step


def total_grad_norm(parameters) -> torch.Tensor:
    """||grad_w L||_2 over all parameters (the paper's Fig. 1 quantity), as a device scalar."""
    grads = [p.grad for p in parameters if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


class CalibrationMeter:
    """Accuracy and expected calibration error (15 equal-width confidence bins) accumulated on the device."""

    def __init__(self, device, bins=15):
        self.bins = bins
        self.count = torch.zeros(bins, dtype=torch.float64, device=device)
        self.confidence = torch.zeros(bins, dtype=torch.float64, device=device)
        self.correct = torch.zeros(bins, dtype=torch.float64, device=device)

    def reset(self):
        """Back to a fresh meter, in place (a captured CUDA graph keeps writing to the same tensors)."""
        for t in (self.count, self.confidence, self.correct):
            t.zero_()

    def update(self, logits, labels):
        probs = torch.softmax(logits.detach().float(), dim=1)
        conf, pred = probs.max(dim=1)
        # Bin b holds confidences in (b/bins, (b+1)/bins]; clamp puts confidence 0 in the first bin.
        b = (torch.ceil(conf * self.bins).long() - 1).clamp(0, self.bins - 1)
        self.count.index_add_(0, b, torch.ones_like(conf, dtype=torch.float64))
        self.confidence.index_add_(0, b, conf.double())
        self.correct.index_add_(0, b, (pred == labels).double())

    def read(self) -> dict:
        """Accuracy and ECE over every rank's images."""
        count, confidence, correct = (t.clone() for t in (self.count, self.confidence, self.correct))
        sum_over_ranks_(count, confidence, correct)
        n = float(count.sum())
        if n == 0:
            return {"acc": math.nan, "ece": math.nan}
        ece = float((correct - confidence).abs().sum() / n)
        return {"acc": 100.0 * float(correct.sum()) / n, "ece": 100.0 * ece}


TEST_COLUMNS = ("test_clean_acc", "test_pgd_acc", "test_ece_clean", "test_ece_adv")


def evaluation_row(clean: CalibrationMeter, adv: CalibrationMeter) -> dict:
    """The per-epoch test columns from the clean and the adversarial calibration meters."""
    c, a = clean.read(), adv.read()
    return dict(zip(TEST_COLUMNS, (c["acc"], a["acc"], c["ece"], a["ece"])))


class BestFinalTracker:
    """The paper's Best / Final / Diff columns: best = the evaluated epoch of highest test PGD-20 accuracy (``key``;
    standard training: clean accuracy), epochs skipped by --eval-every have none; final = the last epoch, which is
    always evaluated. In an SWA run (rows with ``swa_averaged``) only the epochs that evaluated the averaged model
    can be best, once there are any: Chen et al.'s best SWA checkpoint (``main_adv.py``, ``is_ra_best_swa``)."""

    def __init__(self, history=(), key="test_pgd_acc"):
        self.history, self.key = list(history), key

    def add(self, row: dict):
        self.history.append(row)

    @property
    def best(self) -> dict:
        evaluated = [r for r in self.history if r[self.key] is not None]
        evaluated = [r for r in evaluated if r.get("swa_averaged")] or evaluated
        return max(evaluated, key=lambda r: (r[self.key], -r["epoch"]), default=None)

    @property
    def is_best_last(self) -> bool:
        return self.best is self.history[-1]

    def summary(self) -> dict:
        best, final = self.best, self.history[-1]
        out = {"best_epoch": best["epoch"], "final_epoch": final["epoch"]}
        for key in TEST_COLUMNS:
            out[key] = {"best": best[key], "final": final[key], "diff": best[key] - final[key]}
        return out
