"""The PGD step kernel: one elementwise pass ``clamp(min(max(x_adv + a*sign(g), x - eps), x + eps), 0, 1)``.

The op is elementwise, so it runs over the flat storage of tensors that share one dense layout (contiguous or
channels-last alike); inputs laid out differently from x_adv are first copied into x_adv's layout.
"""

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from .utils import check_dtypes, is_interpreted, num_warps_for

BLOCK = 2048  # elements per program
ELEMENTS_PER_THREAD = 8  # 8 warps; two 16-byte loads per fp32 tensor in flight per thread


@triton.jit
def pgd_step_kernel(
    x_adv_ptr,
    x_ptr,
    grad_ptr,
    out_ptr,
    n_elements,
    step_size,
    eps,  # a float, or a pointer to a 0-d tensor when the *_IN_MEMORY flag says so
    STEP_IN_MEMORY: tl.constexpr,
    EPS_IN_MEMORY: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # int64: no overflow past 2**31
    mask = offsets < n_elements
    x_adv = tl.load(x_adv_ptr + offsets, mask=mask).to(tl.float32)
    x = tl.load(x_ptr + offsets, mask=mask).to(tl.float32)
    g = tl.load(grad_ptr + offsets, mask=mask).to(tl.float32)
    # Read in the kernel, so a captured CUDA graph picks up new values written into the 0-d tensors.
    if STEP_IN_MEMORY:
        step_size = tl.load(step_size).to(tl.float32)
    if EPS_IN_MEMORY:
        eps = tl.load(eps).to(tl.float32)
    # sign(g) exactly as torch.sign: sign(0) = 0, and sign(NaN) = 0 too.
    sign = (g > 0).to(tl.float32) - (g < 0).to(tl.float32)
    moved = x_adv + step_size * sign
    # PropagateNan.ALL: a NaN in x_adv or x stays NaN, as with torch.maximum/minimum/clamp in the reference.
    lo = tl.maximum(moved, x - eps, propagate_nan=tl.PropagateNan.ALL)
    projected = tl.minimum(lo, x + eps, propagate_nan=tl.PropagateNan.ALL)
    clamped = tl.minimum(
        tl.maximum(projected, 0.0, propagate_nan=tl.PropagateNan.ALL), 1.0, propagate_nan=tl.PropagateNan.ALL
    )
    tl.store(out_ptr + offsets, clamped.to(out_ptr.dtype.element_ty), mask=mask)


def _same_layout(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Same strides wherever the size is above 1 (strides of size-1 dims never address memory)."""
    return all(sa == sb for sa, sb, n in zip(a.stride(), b.stride(), a.shape) if n > 1)


def _in_layout_of(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` itself if it is laid out like the dense tensor ``like``, else a copy in that layout."""
    if _same_layout(t, like):
        return t
    return torch.empty_like(like, dtype=t.dtype).copy_(t)


def _is_dense(t: torch.Tensor) -> bool:
    """Contiguous or channels-last: layouts whose storage can be walked flat."""
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last))


def _check(x_adv, x, grad, step_size, eps) -> None:
    """Host-side checks on shapes and dtypes only (metadata: no device sync)."""
    if x_adv.shape != x.shape or x_adv.shape != grad.shape:
        raise ValueError(
            f"pgd_step: shapes differ: x_adv {tuple(x_adv.shape)}, x {tuple(x.shape)}, grad {tuple(grad.shape)}"
        )
    check_dtypes("pgd_step", x_adv, x, grad)
    for name, value in (("step_size", step_size), ("eps", eps)):
        if isinstance(value, torch.Tensor) and (value.numel() != 1 or value.device != x_adv.device):
            raise ValueError(
                f"pgd_step: {name} must be a float or a one-element tensor on {x_adv.device}, "
                f"got shape {tuple(value.shape)} on {value.device}"
            )


def _launch(out, x_adv, x, grad, step_size, eps) -> None:
    """Run the kernel over the flat storage of ``out`` (dense), reading inputs copied to its layout if needed.

    ``out is x_adv`` is allowed: every element is read before it is written, by the same thread.
    """
    x_adv, x, grad = (_in_layout_of(t, out) for t in (x_adv, x, grad))
    n = out.numel()
    if n == 0:
        return
    kernel = pgd_step_kernel if is_interpreted(pgd_step_kernel) else wrap_triton(pgd_step_kernel)
    kernel[(triton.cdiv(n, BLOCK),)](
        x_adv,
        x,
        grad,
        out,
        n,
        step_size,
        eps,
        STEP_IN_MEMORY=isinstance(step_size, torch.Tensor),
        EPS_IN_MEMORY=isinstance(eps, torch.Tensor),
        BLOCK=BLOCK,
        num_warps=num_warps_for(BLOCK, ELEMENTS_PER_THREAD),
    )


def launch_pgd_step(x_adv, x, grad, step_size, eps) -> torch.Tensor:
    """The PGD step into a new tensor laid out like x_adv (empty_like keeps a dense tensor's strides)."""
    _check(x_adv, x, grad, step_size, eps)
    out = torch.empty_like(x_adv)
    _launch(out, x_adv, x, grad, step_size, eps)
    return out


def launch_pgd_step_(x_adv, x, grad, step_size, eps) -> None:
    """The PGD step written over x_adv: in one pass when x_adv is dense, else through a temporary."""
    _check(x_adv, x, grad, step_size, eps)
    if _is_dense(x_adv):
        _launch(x_adv, x_adv, x, grad, step_size, eps)
    else:
        out = torch.empty_like(x_adv)
        _launch(out, x_adv, x, grad, step_size, eps)
        x_adv.copy_(out)
