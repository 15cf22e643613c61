"""Knowledge distillation for adversarial training (KD-AT) as Chen et al. (ICLR 2021, "Robust Overfitting may be
Mitigated by Properly Learned Smoothening") run it, in their code (VITA-Group/Alleviate-Robust-Overfitting,
``utils.py``: ``train_epoch_adv_dual_teacher`` lines 423-487 and ``loss_fn_kd`` lines 236-266; ``main_adv.py``: the
KD options, lines 61-70, and the teachers' loading, lines 129-145).

Per PGD-AT iteration, with x_adv the student's own attack (CE on the hard labels):

    loss = coef_ce * CE(s, y) + coef_kd1 * KD(s, t_std) + coef_kd2 * KD(s, t_adv),    s = student(x_adv)
    KD(s, t) = T^2 * mean over the batch of sum over classes of -softmax(t / T) * log_softmax(s / T)

with both teachers in eval mode and without gradient, fed the ADVERSARIAL input x_adv (``teacher1(input_adv)``), and
the defaults coef_ce 0.3, coef_kd1 0.1 (teacher1: the standard-trained one), coef_kd2 0.6 (teacher2: the adversarially
trained one), T 2 (their README passes ``cifar10_resnet18_std_SA_best.pt`` as teacher1 and
``cifar10_resnet18_adv_RA_best.pt`` as teacher2: the best checkpoints by clean and by robust accuracy). KD is on for
every epoch (``--lwf_start 0 --lwf_end 200``). Their KD term is the soft-target cross-entropy, not a KL divergence:
the two differ by the teacher's entropy, a constant for the student, so the gradients are the same and only the loss
values differ; this follows the code.

The teachers are frozen models loaded with the checkpoint loader (weights only); a run directory names its best.pt.
The numbers are 0-d float64 buffers like the label strategies' (``labels.py``): a compiled iteration reads them from
memory, and the teachers' forwards are part of its one graph.
"""

import os

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import check_checkpoint_fits_data, load_checkpoint, model_from_state
from .errors import UsageError


def kd_loss(student: Tensor, teacher: Tensor, temperature: Tensor) -> Tensor:
    """Chen et al.'s ``loss_fn_kd``: T^2 * batch mean of the soft-target CE of softmax(teacher / T), in float32."""
    t = temperature.to(torch.float32)  # a float64 0-d tensor would promote the loss to float64
    log_student = F.log_softmax(student.float() / t, dim=1)
    target = F.softmax(teacher.float() / t, dim=1)
    return -(target * log_student).sum(dim=1).mean() * (t * t)


def teacher_path(given: str) -> str:
    """A teacher's checkpoint: ``given`` itself, or a run directory's best.pt (Chen et al. distil the best ones)."""
    return os.path.join(given, "best.pt") if os.path.isdir(given) else given


def load_teacher(given: str, flag: str, info, device) -> nn.Module:
    """The frozen teacher model of ``given`` (a checkpoint or a run directory), which must have been trained on the
    data of ``info``; a missing or unreadable file or another data set is a one-line UsageError naming ``flag``."""
    path = teacher_path(given)
    if not os.path.isfile(path):
        raise UsageError(f"--{flag} {given}: no checkpoint there (a run directory needs its best.pt): check the path")
    try:
        state = load_checkpoint(path, map_location=device)
    except UsageError as exc:  # which flag named the file the loader refused
        raise UsageError(f"--{flag} {given}: {exc}") from None
    check_checkpoint_fits_data(
        state, info, path, fix=f"pass --{flag} a teacher trained on {info.dataset} (the data of --data)"
    )
    teacher = model_from_state(state, device)
    teacher.requires_grad_(False)
    return teacher


class Distillation(nn.Module):
    """The two teachers and the numbers of Chen et al.'s dual-teacher loss; ``loss`` replaces PGD-AT's hard-label
    CE with it. ``train(mode)`` keeps the teachers in eval mode (BN and dropout as at test time, as their code sets)."""

    def __init__(self, teacher_adv: nn.Module, teacher_std: nn.Module, cfg):
        super().__init__()
        self.teacher_adv, self.teacher_std = teacher_adv.eval(), teacher_std.eval()
        for name in ("kd_ce", "kd_adv", "kd_std", "kd_temperature"):
            self.register_buffer(name, torch.tensor(getattr(cfg, name), dtype=torch.float64), persistent=False)

    def train(self, mode=True):
        return super().train(False)

    @classmethod
    def from_config(cls, cfg, info, device) -> "Distillation | None":
        """None without teachers; both teachers loaded and checked against the data otherwise."""
        if not cfg.kd_teacher_adv:
            return None
        adv = load_teacher(cfg.kd_teacher_adv, "kd-teacher-adv", info, device)
        std = load_teacher(cfg.kd_teacher_std, "kd-teacher-std", info, device)
        return cls(adv, std, cfg).to(device)

    def loss(self, hard_ce: Tensor, logits_adv: Tensor, x_adv: Tensor) -> Tensor:
        """coef_ce * ``hard_ce`` + coef_kd1 * KD(standard teacher) + coef_kd2 * KD(adv teacher), summed in their
        order, the teachers fed ``x_adv``; each weight cast to the loss's float32 first (as objectives.py does with
        TRADES' beta)."""
        with torch.no_grad():
            target_adv, target_std = self.teacher_adv(x_adv), self.teacher_std(x_adv)
        kd_adv = kd_loss(logits_adv, target_adv, self.kd_temperature)
        kd_std = kd_loss(logits_adv, target_std, self.kd_temperature)
        dtype = hard_ce.dtype
        return hard_ce * self.kd_ce.to(dtype) + kd_std * self.kd_std.to(dtype) + kd_adv * self.kd_adv.to(dtype)
