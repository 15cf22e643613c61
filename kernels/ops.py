"""The ``torch.library`` registration of the fused ops, namespace ``fastsglr``.

Every op is a ``triton_op``, so ``torch.compile`` traces into it and sees the Triton kernels (``wrap_triton``).
Its body launches Triton on CUDA tensors and runs ``reference`` on any other device, and for dtypes the kernels
do not take (float64): that is what the fake (meta) implementation and ``torch.compile`` on CPU trace. Eager CPU
calls go to the registered CPU kernel, which runs the Triton kernels themselves when they were built by the
interpreter (TRITON_INTERPRET=1 at import) and the reference otherwise. ``backend`` tells which one runs.

``torch.library`` refuses an autograd formula on an op that mutates an input, and the SGLR loss both updates
the EMA table and needs a gradient. So each loss is two ops:

* ``sglr_forward`` (mutates ``table``) / ``soft_ce_forward``: the fused pass, no autograd. Returns the per-row
  losses and the gradient with respect to the logits, computed in the same pass;
* ``mean_with_saved_grad(logits, row_loss, grad)``: ``row_loss.mean()``, differentiable in ``logits`` only, its
  backward scales the saved gradient by the incoming one. ``logits`` is an input only to carry autograd.
"""

import torch
from torch import Tensor
from torch.library import triton_op

from . import reference
from .pgd import launch_pgd_step, launch_pgd_step_, pgd_step_kernel
from .sglr import launch_sglr_forward, launch_soft_ce_forward
from .utils import KERNEL_DTYPES, is_interpreted


def _interpreted() -> bool:
    """Whether the Triton kernels were built by the interpreter (all are decorated together, at import)."""
    return is_interpreted(pgd_step_kernel)


def _kernels_take(*tensors: Tensor) -> bool:
    """The kernels load and store fp32, bf16 and fp16; other dtypes (float64) run the reference everywhere."""
    return all(t.dtype in KERNEL_DTYPES for t in tensors)


def backend(tensor: Tensor) -> str:
    """Which implementation an eager call of the ops runs on inputs with ``tensor``'s device and dtype.

    "triton": compiled Triton kernels (CUDA); "triton-interpreter": the same kernels in the Triton interpreter
    (TRITON_INTERPRET=1 was set when fastsglr.kernels was first imported; CPU, or CUDA through host copies);
    "reference": the plain PyTorch definitions (other devices, and dtypes other than fp32/bf16/fp16).
    ``torch.compile`` on CPU always traces the reference.
    """
    if not _kernels_take(tensor):
        return "reference"
    if _interpreted() and tensor.device.type in ("cpu", "cuda"):
        return "triton-interpreter"
    return "triton" if tensor.device.type == "cuda" else "reference"


def _scalar(value: float, in_memory: Tensor | None):
    """The op schema carries each PGD scalar as a float plus an optional 0-d tensor that overrides it."""
    return value if in_memory is None else in_memory


# ---- PGD step -----------------------------------------------------------------------------------------------


@triton_op("fastsglr::pgd_step", mutates_args=())
def _pgd_step(
    x_adv: Tensor,
    x: Tensor,
    grad: Tensor,
    step_size: float,
    eps: float,
    step_size_t: Tensor | None,
    eps_t: Tensor | None,
) -> Tensor:
    step_size, eps = _scalar(step_size, step_size_t), _scalar(eps, eps_t)
    if x_adv.device.type == "cuda" and _kernels_take(x_adv, x, grad):
        return launch_pgd_step(x_adv, x, grad, step_size, eps)
    return reference.pgd_step(x_adv, x, grad, step_size, eps)


@_pgd_step.register_kernel("cpu")
def _pgd_step_cpu(x_adv, x, grad, step_size, eps, step_size_t, eps_t):
    step_size, eps = _scalar(step_size, step_size_t), _scalar(eps, eps_t)
    if _interpreted() and _kernels_take(x_adv, x, grad):
        return launch_pgd_step(x_adv, x, grad, step_size, eps)
    return reference.pgd_step(x_adv, x, grad, step_size, eps)


@triton_op("fastsglr::pgd_step_inplace", mutates_args={"x_adv"})
def _pgd_step_(
    x_adv: Tensor,
    x: Tensor,
    grad: Tensor,
    step_size: float,
    eps: float,
    step_size_t: Tensor | None,
    eps_t: Tensor | None,
) -> None:
    step_size, eps = _scalar(step_size, step_size_t), _scalar(eps, eps_t)
    if x_adv.device.type == "cuda" and _kernels_take(x_adv, x, grad):
        launch_pgd_step_(x_adv, x, grad, step_size, eps)
    else:
        x_adv.copy_(reference.pgd_step(x_adv, x, grad, step_size, eps))


@_pgd_step_.register_kernel("cpu")
def _pgd_step_inplace_cpu(x_adv, x, grad, step_size, eps, step_size_t, eps_t):
    step_size, eps = _scalar(step_size, step_size_t), _scalar(eps, eps_t)
    if _interpreted() and _kernels_take(x_adv, x, grad):
        launch_pgd_step_(x_adv, x, grad, step_size, eps)
    else:
        x_adv.copy_(reference.pgd_step(x_adv, x, grad, step_size, eps))


# ---- Soft-target cross-entropy and SGLR ---------------------------------------------------------------------


def _reference_soft_ce_forward(logits, target):
    row_loss, grad = reference.soft_cross_entropy_forward(logits, target)
    return row_loss, grad.contiguous()  # the kernels write a contiguous gradient: same strides on every path


def _reference_sglr_forward(logits_adv, logits_clean, labels, index, table, settings):
    row_loss, grad = reference.sglr_forward(logits_adv, logits_clean, labels, index, table, *settings.unbind())
    return row_loss, grad.contiguous()


@triton_op("fastsglr::soft_ce_forward", mutates_args=())
def _soft_ce_forward(logits: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    if logits.device.type == "cuda" and _kernels_take(logits, target):
        return launch_soft_ce_forward(logits, target)
    return _reference_soft_ce_forward(logits, target)


@_soft_ce_forward.register_kernel("cpu")
def _soft_ce_forward_cpu(logits, target):
    if _interpreted() and _kernels_take(logits, target):
        return launch_soft_ce_forward(logits, target)
    return _reference_soft_ce_forward(logits, target)


@triton_op("fastsglr::sglr_forward", mutates_args={"table"})
def _sglr_forward(
    logits_adv: Tensor, logits_clean: Tensor, labels: Tensor, index: Tensor, table: Tensor, settings: Tensor
) -> tuple[Tensor, Tensor]:
    if logits_adv.device.type == "cuda" and _kernels_take(logits_adv, logits_clean, table):
        return launch_sglr_forward(logits_adv, logits_clean, labels, index, table, settings)
    return _reference_sglr_forward(logits_adv, logits_clean, labels, index, table, settings)


@_sglr_forward.register_kernel("cpu")
def _sglr_forward_cpu(logits_adv, logits_clean, labels, index, table, settings):
    if _interpreted() and _kernels_take(logits_adv, logits_clean, table):
        return launch_sglr_forward(logits_adv, logits_clean, labels, index, table, settings)
    return _reference_sglr_forward(logits_adv, logits_clean, labels, index, table, settings)


@triton_op("fastsglr::mean_with_saved_grad", mutates_args=())
def _mean_with_saved_grad(logits: Tensor, row_loss: Tensor, grad: Tensor) -> Tensor:
    # A triton_op without a kernel of its own: torch.compile then sees (and can fuse) the mean.
    return row_loss.mean()


def _setup_mean_with_saved_grad(ctx, inputs, output):
    ctx.save_for_backward(inputs[2])


def _backward_mean_with_saved_grad(ctx, grad_output):
    (grad,) = ctx.saved_tensors
    return grad * grad_output, None, None


_mean_with_saved_grad.register_autograd(_backward_mean_with_saved_grad, setup_context=_setup_mean_with_saved_grad)


# ---- Public functions ---------------------------------------------------------------------------------------


def _split(value):
    """A PGD scalar as the op takes it: (float, None) for a number, (0.0, tensor) for a tensor."""
    return (0.0, value) if isinstance(value, Tensor) else (value, None)


def pgd_step(x_adv: Tensor, x: Tensor, grad: Tensor, step_size, eps) -> Tensor:
    """One l-inf PGD step (see ``reference.pgd_step``). ``step_size``/``eps``: floats or 0-d tensors on the
    inputs' device (a captured CUDA graph reads the tensors' current values)."""
    (s, s_t), (e, e_t) = _split(step_size), _split(eps)
    return torch.ops.fastsglr.pgd_step(x_adv, x, grad, s, e, s_t, e_t)


def pgd_step_(x_adv: Tensor, x: Tensor, grad: Tensor, step_size, eps) -> Tensor:
    """In-place ``pgd_step``: overwrites and returns ``x_adv``."""
    (s, s_t), (e, e_t) = _split(step_size), _split(eps)
    torch.ops.fastsglr.pgd_step_inplace(x_adv, x, grad, s, e, s_t, e_t)
    return x_adv


def soft_cross_entropy(logits: Tensor, target: Tensor) -> Tensor:
    """Batch-mean soft-target cross-entropy (see ``reference.soft_cross_entropy``), gradient to logits only.

    The gradient is computed in the forward pass; the backward only scales it (no double backward).
    """
    row_loss, grad = torch.ops.fastsglr.soft_ce_forward(logits.detach(), target.detach())
    return torch.ops.fastsglr.mean_with_saved_grad(logits, row_loss, grad)


def sglr_settings(r, temperature, alpha, lam, device) -> Tensor:
    """SGLR's four numbers as the fused op takes them: one float64 tensor [r, temperature, alpha, lam] on ``device``.
    Each may be a float or a 0-d tensor; float64 holds a Python float exactly, so ``1 - lam`` rounds as it does in
    Python. A float becomes a ``torch.full`` (a factory op: traceable on fake tensors, where a tensor built from data
    is not)."""

    def number(v):
        if isinstance(v, Tensor):
            return v.to(device, torch.float64)
        return torch.full((), v, dtype=torch.float64, device=device)

    return torch.stack([number(v) for v in (r, temperature, alpha, lam)])


def sglr_loss(
    logits_adv: Tensor, logits_clean: Tensor, labels: Tensor, index: Tensor, table: Tensor, r, temperature, alpha, lam
) -> Tensor:
    """SGLR in one fused pass (see ``reference.sglr_loss``): updates ``table[index]`` in place, returns the loss.

    ``r``, ``temperature``, ``alpha``, ``lam``: floats or 0-d tensors on the logits' device (the kernel reads them
    from memory, so a compiled iteration given tensors neither recompiles nor guards on their values). Indices must
    be unique within the batch and labels in [0, K): neither is checked, as that would need a host sync. Gradient
    flows to logits_adv only; no double backward.
    """
    settings = sglr_settings(r, temperature, alpha, lam, logits_adv.device)
    row_loss, grad = torch.ops.fastsglr.sglr_forward(
        logits_adv.detach(), logits_clean.detach(), labels, index, table, settings
    )
    return torch.ops.fastsglr.mean_with_saved_grad(logits_adv, row_loss, grad)
