"""l-inf attacks for training and evaluation: PGD (CE or CW margin) and the TRADES KL attack.

Every function here runs inside a compiled training step, so it is written without host syncs: input gradients come
from ``input_gradient`` (parameter ``.grad`` stays untouched), random starts come from torch's default generator on
x's device (a seeded run is reproducible), and each step is the op set's ``pgd_step`` (sign step, projection to the
eps-ball and to [0, 1]). ``eps`` and ``step_size`` are floats or 0-d tensors on x's device: a compiled iteration
given tensors reads them from memory and compiles once for all values. None of them changes
``model.train()``/``eval()``: the caller picks the BatchNorm mode, because code bases disagree on it (Rice et al.'s
robust-overfitting code crafts in train mode; the authors' SGLS ``main_adv.py``, AWP and TRADES in eval mode).

Attack losses are summed, not averaged, over the batch, so a sample's gradient does not depend on the batch size.
"""

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from fastsglr.kernels import PLAIN_OPS

from .errors import UsageError

ATTACK_LOSSES = ("ce", "cw")


def input_gradient(model, objective, x_adv: Tensor) -> Tensor:
    """d objective(model(x_adv)) / d x_adv, and no gradient of any weight.

    ``torch.func.grad`` with the weights closed over as constants: its backward computes input gradients only
    (every ``convolution_backward`` with output mask [True, False, False]) when traced by torch.compile as well as
    eagerly, where it gives ``torch.autograd.grad``'s numbers bit for bit; Dynamo (torch 2.11 and 2.14) traces it
    into the iteration's one graph, where it refuses the ``requires_grad_`` that ``torch.autograd.grad`` needs.
    The model's buffers are an argument of the transformed function, not closed over: a train-mode BatchNorm then
    updates its running statistics in place during the attack exactly as an eager forward does (func.grad refuses
    to mutate a tensor closed over). Outside the transform nothing is recorded for autograd (no_grad: func.grad
    ignores it inside), so the result is a constant.
    """
    weights = dict(model.named_parameters())

    def attack_objective(x_in, buffers):
        return objective(functional_call(model, (weights, buffers), (x_in,)))

    with torch.no_grad():
        return torch.func.grad(attack_objective)(x_adv.detach(), dict(model.named_buffers()))


def _as_tensor(value, like: Tensor) -> Tensor:
    """A float or 0-d tensor as a float64 tensor on ``like``'s device (float64 holds a Python float exactly)."""
    if isinstance(value, Tensor):
        return value.to(like.device, torch.float64)
    return torch.full((), value, dtype=torch.float64, device=like.device)


def uniform_start(x: Tensor, eps) -> Tensor:
    """x plus noise uniform in [-eps, eps] per pixel, with eps read from a tensor.

    The noise is what ``torch.empty_like(x).uniform_(-eps, eps)`` draws for a float eps (on a CPU bit for bit: ATen
    computes ``u * (to - from) + from`` in float64 from float32 bounds), which needs eps as a Python float.
    """
    bound = _as_tensor(eps, x).to(x.dtype).double()
    return x + (torch.rand_like(x).double() * (2 * bound) - bound).to(x.dtype)


def project(x_adv: Tensor, x: Tensor, eps) -> Tensor:
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


def pgd(
    model,
    x: Tensor,
    labels: Tensor,
    *,
    eps,
    step_size,
    steps: int,
    loss: str = "ce",
    random_start: bool = True,
    extra=None,
    ops=PLAIN_OPS,
) -> Tensor:
    """l-inf PGD (Madry et al.) maximising CE or the CW margin; returns the detached adversarial batch.

    The start is uniform in the eps-ball (clipped to [0, 1]) when ``random_start``, else x itself. ``extra``: None, or
    a function of the logits (summed over the batch) added to the maximised loss (a label strategy's
    ``attack_term``). ``ops``: the op set whose ``pgd_step`` moves the batch (the plain definitions unless an engine
    passes its own).
    """
    if loss not in ATTACK_LOSSES:
        raise UsageError(f"unknown attack loss '{loss}': choose one of {', '.join(ATTACK_LOSSES)}")
    x = x.detach()
    x_adv = project(uniform_start(x, eps), x, eps) if random_start else x.clone()

    def objective(logits):
        value = _attack_loss(logits, labels, loss)
        return value if extra is None else value + extra(logits)

    for _ in range(steps):
        grad = input_gradient(model, objective, x_adv)
        x_adv = ops.pgd_step(x_adv.detach(), x, grad, step_size, eps)
    return x_adv.detach()


TRADES_STARTS = ("gaussian", "uniform")


def trades_attack(model, x: Tensor, *, eps, step_size, steps: int, start: str = "gaussian", ops=PLAIN_OPS) -> Tensor:
    """The TRADES inner maximisation: sign steps maximising the summed KL(softmax(f(x)) || softmax(f(x_adv))),
    i.e. TRADES' ``KLDivLoss(log_softmax(f(x_adv)), softmax(f(x)))``; f(x) is a constant computed once.

    ``start``: gaussian, x + 0.001 * N(0, 1) as in TRADES' ``trades.py``; uniform, uniform in the eps-ball as PGD's,
    as the authors' TRADES+SGLS does (their repository ships it only as a .pyc). Unlike TRADES, the gaussian start
    is clipped to the ball and [0, 1] too, so the result is a valid image even with zero steps.
    """
    if start not in TRADES_STARTS:
        raise UsageError(f"unknown TRADES attack start '{start}': choose one of {', '.join(TRADES_STARTS)}")
    x = x.detach()
    with torch.no_grad():
        p_clean = torch.softmax(model(x).float(), dim=1)
    noisy = x + 0.001 * torch.randn_like(x) if start == "gaussian" else uniform_start(x, eps)
    x_adv = project(noisy, x, eps)

    def kl_to_clean(logits):
        return F.kl_div(torch.log_softmax(logits.float(), dim=1), p_clean, reduction="sum")

    for _ in range(steps):
        grad = input_gradient(model, kl_to_clean, x_adv)
        x_adv = ops.pgd_step(x_adv.detach(), x, grad, step_size, eps)
    return x_adv.detach()
