"""The SGLR kernels: the soft target, the in-place EMA table update and the soft-target cross-entropy in one pass.

Each program owns BLOCK_B whole rows of BLOCK_K = next_power_of_2(K) columns (padding masked), so every row
reduction stays inside one program and no atomics are needed. The forward pass also writes the gradient with
respect to logits_adv, ``(sum(y) * softmax(z_adv) - y) / B``, so the backward pass is a multiplication by the
incoming scalar gradient. The batch loss is the mean of the per-row losses, taken by the caller with a
deterministic ``torch.mean``.
"""

import torch
import triton
import triton.language as tl
from torch.library import wrap_triton

from .utils import check_dtypes, is_interpreted, num_warps_for

ELEMENTS_PER_PROGRAM = 2048  # rows per program = 2048 // BLOCK_K: many rows per program when K is small
# About 4 elements of each [BLOCK_B, BLOCK_K] tile per thread: the kernel keeps several tiles live (logits,
# table row, softmaxes, target) and ptxas spilled at 8 per thread (K = 1000 on sm_90a).
ELEMENTS_PER_THREAD = 4
MAX_K = 8192  # a whole row lives in registers: at 16384 even 32 warps spill (tests/test_kernels_aot.py checks)


@triton.jit
def _softmax_rows(z):
    """Row softmax of a [BLOCK_B, BLOCK_K] fp32 tile whose padding columns hold -inf (so exp gives 0 there)."""
    e = tl.exp(z - tl.max(z, axis=1)[:, None])
    return e / tl.sum(e, axis=1)[:, None]


@triton.jit
def _soft_ce_rows(z, y, col_ok, inv_batch):
    """Per-row ``sum_k -y_k * log_softmax(z)_k`` and its gradient ``(sum(y) * softmax(z) - y) * inv_batch``.

    ``z`` has -inf and ``y`` has 0 on padding columns; ``col_ok`` ([1, BLOCK_K]) says which columns are real.
    """
    z_max = tl.max(z, axis=1)
    e = tl.exp(z - z_max[:, None])
    sum_e = tl.sum(e, axis=1)
    log_p = z - (z_max + tl.log(sum_e))[:, None]
    # log_p is -inf on the padding, where y is 0: zero it there first, since 0 * (-inf) is NaN.
    row_loss = -tl.sum(y * tl.where(col_ok, log_p, 0.0), axis=1)
    grad = (tl.sum(y, axis=1)[:, None] * (e / sum_e[:, None]) - y) * inv_batch
    return row_loss, grad


@triton.jit
def _load_logits(ptr, rows, cols, stride_row, stride_col, mask, col_ok):
    """A [BLOCK_B, BLOCK_K] tile of logits in fp32, -inf on padding columns (0 on rows past the batch)."""
    z = tl.load(ptr + rows[:, None] * stride_row + cols[None, :] * stride_col, mask=mask, other=0.0)
    return tl.where(col_ok, z.to(tl.float32), float("-inf"))


@triton.jit
def sglr_forward_kernel(
    z_adv_ptr,
    z_clean_ptr,
    labels_ptr,
    index_ptr,
    table_ptr,
    row_loss_ptr,
    grad_ptr,
    n_rows,
    n_cols,
    stride_adv,
    stride_adv_k,
    stride_clean,
    stride_clean_k,
    stride_labels,
    stride_index,
    stride_table,
    stride_table_k,
    settings_ptr,  # [r, temperature, alpha, lam]: read on the device, so new values need no recompile
    BLOCK_B: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_K)
    row_ok = rows < n_rows
    col_ok = (cols < n_cols)[None, :]
    mask = row_ok[:, None] & col_ok
    z_adv = _load_logits(z_adv_ptr, rows, cols, stride_adv, stride_adv_k, mask, col_ok)
    z_clean = _load_logits(z_clean_ptr, rows, cols, stride_clean, stride_clean_k, mask, col_ok)
    labels = tl.load(labels_ptr + rows * stride_labels, mask=row_ok, other=-1)
    # The table row of each sample: its index is loaded as an integer and turned into an offset from the base
    # pointer (the interpreter cannot load through a pointer that was itself loaded from memory).
    index = tl.load(index_ptr + rows * stride_index, mask=row_ok, other=0).to(tl.int64)
    table_ptrs = table_ptr + index[:, None] * stride_table + cols[None, :] * stride_table_k
    old = tl.load(table_ptrs, mask=mask, other=0.0).to(tl.float32)

    r, temperature = tl.load(settings_ptr).to(tl.float32), tl.load(settings_ptr + 1).to(tl.float32)
    alpha, lam = tl.load(settings_ptr + 2).to(tl.float32), tl.load(settings_ptr + 3).to(tl.float32)
    inv_t = 1.0 / temperature
    f = lam * _softmax_rows(z_clean * inv_t) + (1.0 - lam) * _softmax_rows(z_adv * inv_t)
    new = alpha * old + (1.0 - alpha) * f
    tl.store(table_ptrs, new.to(table_ptr.dtype.element_ty), mask=mask)  # rows are unique: no races
    # The target is built from the updated row in fp32, before any rounding to the table's dtype.
    onehot = (cols[None, :] == labels[:, None]).to(tl.float32)
    y = tl.where(col_ok, r * new + (1.0 - r) * onehot, 0.0)

    row_loss, grad = _soft_ce_rows(z_adv, y, col_ok, 1.0 / n_rows)
    tl.store(row_loss_ptr + rows, row_loss, mask=row_ok)
    tl.store(grad_ptr + rows[:, None] * n_cols + cols[None, :], grad.to(grad_ptr.dtype.element_ty), mask=mask)


@triton.jit
def soft_ce_forward_kernel(
    z_ptr,
    y_ptr,
    row_loss_ptr,
    grad_ptr,
    n_rows,
    n_cols,
    stride_z,
    stride_z_k,
    stride_y,
    stride_y_k,
    BLOCK_B: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BLOCK_K)
    row_ok = rows < n_rows
    col_ok = (cols < n_cols)[None, :]
    mask = row_ok[:, None] & col_ok
    z = _load_logits(z_ptr, rows, cols, stride_z, stride_z_k, mask, col_ok)
    y = tl.load(y_ptr + rows[:, None] * stride_y + cols[None, :] * stride_y_k, mask=mask, other=0.0)
    row_loss, grad = _soft_ce_rows(z, y.to(tl.float32), col_ok, 1.0 / n_rows)
    tl.store(row_loss_ptr + rows, row_loss, mask=row_ok)
    tl.store(grad_ptr + rows[:, None] * n_cols + cols[None, :], grad.to(grad_ptr.dtype.element_ty), mask=mask)


def launch_config(n_rows: int, n_cols: int) -> dict:
    """BLOCK_B, BLOCK_K and num_warps for a [n_rows, n_cols] problem (shared with the AOT register check)."""
    if not 1 <= n_cols <= MAX_K:
        raise ValueError(f"the SGLR kernels take 1 to {MAX_K} classes, got {n_cols}")
    block_k = triton.next_power_of_2(n_cols)
    block_b = max(1, min(triton.next_power_of_2(n_rows), ELEMENTS_PER_PROGRAM // block_k))
    return {"BLOCK_B": block_b, "BLOCK_K": block_k, "num_warps": num_warps_for(block_b * block_k, ELEMENTS_PER_THREAD)}


def _outputs(logits: torch.Tensor):
    """Per-row losses (fp32) and the gradient (logits' dtype, contiguous), both written by the kernel."""
    row_loss = logits.new_empty(logits.shape[0], dtype=torch.float32)
    return row_loss, torch.empty_like(logits, memory_format=torch.contiguous_format)


def launch_sglr_forward(logits_adv, logits_clean, labels, index, table, settings):
    """Launch the fused SGLR pass: updates ``table`` rows ``index`` in place, returns (row_loss, grad_logits_adv).

    ``settings``: the 4-element float tensor [r, temperature, alpha, lam] on the logits' device (``sglr_settings``).
    """
    n_rows, n_cols = logits_adv.shape
    if logits_clean.shape != logits_adv.shape or table.dim() != 2 or table.shape[1] != n_cols:
        raise ValueError(
            f"sglr_loss: logits_adv {tuple(logits_adv.shape)}, logits_clean "
            f"{tuple(logits_clean.shape)} and table {tuple(table.shape)} disagree"
        )
    if labels.shape != (n_rows,) or index.shape != (n_rows,):
        raise ValueError(f"sglr_loss: labels {tuple(labels.shape)} and index {tuple(index.shape)} must be ({n_rows},)")
    if settings.shape != (4,) or settings.device != logits_adv.device:
        raise ValueError(
            f"sglr_loss: settings must be [r, temperature, alpha, lam] on {logits_adv.device}, got shape "
            f"{tuple(settings.shape)} on {settings.device}"
        )
    check_dtypes("sglr_loss", logits_adv, logits_clean, table)
    row_loss, grad = _outputs(logits_adv)
    if n_rows == 0:
        return row_loss, grad
    config = launch_config(n_rows, n_cols)
    kernel = sglr_forward_kernel if is_interpreted(sglr_forward_kernel) else wrap_triton(sglr_forward_kernel)
    kernel[(triton.cdiv(n_rows, config["BLOCK_B"]),)](
        logits_adv,
        logits_clean,
        labels,
        index,
        table,
        row_loss,
        grad,
        n_rows,
        n_cols,
        logits_adv.stride(0),
        logits_adv.stride(1),
        logits_clean.stride(0),
        logits_clean.stride(1),
        labels.stride(0),
        index.stride(0),
        table.stride(0),
        table.stride(1),
        settings,
        **config,
    )
    return row_loss, grad


def launch_soft_ce_forward(logits, target):
    """Launch the soft-target cross-entropy pass: returns (row_loss, grad_logits)."""
    if logits.dim() != 2 or target.shape != logits.shape:
        raise ValueError(
            f"soft_cross_entropy: logits {tuple(logits.shape)} and target {tuple(target.shape)} must be the same [B, K]"
        )
    check_dtypes("soft_cross_entropy", logits, target)
    row_loss, grad = _outputs(logits)
    n_rows, n_cols = logits.shape
    if n_rows == 0:
        return row_loss, grad
    config = launch_config(n_rows, n_cols)
    kernel = soft_ce_forward_kernel if is_interpreted(soft_ce_forward_kernel) else wrap_triton(soft_ce_forward_kernel)
    kernel[(triton.cdiv(n_rows, config["BLOCK_B"]),)](
        logits,
        target,
        row_loss,
        grad,
        n_rows,
        n_cols,
        logits.stride(0),
        logits.stride(1),
        target.stride(0),
        target.stride(1),
        **config,
    )
    return row_loss, grad
