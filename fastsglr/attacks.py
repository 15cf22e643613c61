"""l-inf attacks for training and evaluation: PGD (CE or CW margin) and the TRADES KL attack.

Every function here runs inside a compiled training step, so it is written without host syncs: input gradients come
from ``torch.autograd.grad`` (parameter ``.grad`` stays untouched), random starts come from torch's default
generator on x's device (a seeded run is reproducible), and each step is the fused ``pgd_step`` op (sign step,
projection to the eps-ball and to [0, 1]). None of them changes ``model.train()``/``eval()``: the caller picks the
BatchNorm mode, because code bases disagree on it (REFERENCE section 3).

Attack losses are summed, not averaged, over the batch, so a sample's gradient does not depend on the batch size.
"""
import torch
import torch.nn.functional as F
from torch import Tensor

from fastsglr.kernels import pgd_step

from .errors import UsageError

ATTACK_LOSSES = ("ce", "cw")


def project(x_adv: Tensor, x: Tensor, eps: float) -> Tensor:
    """Clip into the eps-ball around x and into [0, 1] (for start points; steps project inside pgd_step)."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(0.0, 1.0)


def cw_margin(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-sample CW margin max_{j != y} z_j - z_y (positive means misclassified), in float32."""
    z = logits.float()
    is_label = F.one_hot(labels, z.shape[1]).bool()
    z_label = z.gather(1, labels[:, None]).squeeze(1)
    z_other = z.masked_fill(is_label, float("-inf")).amax(dim=1)
    return z_other - z_label


def _attack_loss(logits: Tensor, labels: Tensor, loss: str) -> Tensor:
    if loss == "ce":
        return F.cross_entropy(logits.float(), labels, reduction="sum")
    return cw_margin(logits, labels).sum()


def pgd(model, x: Tensor, labels: Tensor, *, eps: float, step_size: float, steps: int, loss: str = "ce",
        random_start: bool = True) -> Tensor:
    """l-inf PGD (Madry et al.) maximising CE or the CW margin; returns the detached adversarial batch.

    The start is uniform in the eps-ball (clipped to [0, 1]) when ``random_start``, else x itself.
    """
    if loss not in ATTACK_LOSSES:
        raise UsageError(f"unknown attack loss '{loss}': choose one of {', '.join(ATTACK_LOSSES)}")
    x = x.detach()
    if random_start:
        x_adv = project(x + torch.empty_like(x).uniform_(-eps, eps), x, eps)
    else:
        x_adv = x.clone()
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            objective = _attack_loss(model(x_adv), labels, loss)
        (grad,) = torch.autograd.grad(objective, x_adv)
        x_adv = pgd_step(x_adv.detach(), x, grad, step_size, eps)
    return x_adv.detach()


def trades_attack(model, x: Tensor, *, eps: float, step_size: float, steps: int) -> Tensor:
    """The TRADES inner maximisation: sign steps maximising the summed KL(softmax(f(x)) || softmax(f(x_adv))),
    i.e. TRADES' ``KLDivLoss(log_softmax(f(x_adv)), softmax(f(x)))``.

    As in TRADES, the start is x + 0.001 * N(0, 1) and f(x) is a constant computed once. Unlike TRADES, the start is
    clipped to the ball and [0, 1] too, so the result is a valid image even with zero steps.
    """
    x = x.detach()
    with torch.no_grad():
        p_clean = torch.softmax(model(x).float(), dim=1)
    x_adv = project(x + 0.001 * torch.randn_like(x), x, eps)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            log_q = torch.log_softmax(model(x_adv).float(), dim=1)
            objective = F.kl_div(log_q, p_clean, reduction="sum")
        (grad,) = torch.autograd.grad(objective, x_adv)
        x_adv = pgd_step(x_adv.detach(), x, grad, step_size, eps)
    return x_adv.detach()
