"""The definitions: every fused op of fastsglr written once in plain PyTorch, to be read.

These functions are the semantics. The Triton kernels (``pgd.py``, ``sglr.py``) must agree with them, the CPU
path of each ``torch.library`` op (``ops.py``) calls them, and the tests compare both against float64 copies.
All math is done in float32 (or float64 when given float64), whatever the input dtype.
"""

import torch


def pgd_step(x_adv, x, grad, step_size, eps):
    """One l-inf PGD ascent step: move by step_size * sign(grad), project to the eps-ball around x and to [0, 1].

    sign(0) = 0, so a pixel with no gradient stays put. Returns a new tensor in x_adv's dtype and layout.
    """
    compute = torch.promote_types(x_adv.dtype, torch.float32)
    xa, x0, g = x_adv.to(compute), x.to(compute), grad.to(compute)
    moved = xa + step_size * torch.sign(g)
    projected = torch.minimum(torch.maximum(moved, x0 - eps), x0 + eps)
    return projected.clamp(0.0, 1.0).to(x_adv.dtype)


def sglr_target(logits_adv, logits_clean, labels, table_rows, r, temperature, alpha, lam):
    """The SGLR soft target of Eq. (6)-(8) for one batch, and the updated EMA rows.

    f~   = lam * softmax(z_clean / T) + (1 - lam) * softmax(z_adv / T)
    rows = alpha * table_rows + (1 - alpha) * f~          (the EMA update, one row per sample)
    y    = r * rows + (1 - r) * onehot(labels)             (built from the UPDATED rows)
    Returns (y, rows), both float32 (float64 for float64 inputs), nothing mutated.
    """
    compute = torch.promote_types(logits_adv.dtype, torch.float32)
    z_adv, z_clean = logits_adv.detach().to(compute), logits_clean.detach().to(compute)
    f = lam * torch.softmax(z_clean / temperature, dim=1) + (1 - lam) * torch.softmax(z_adv / temperature, dim=1)
    rows = alpha * table_rows.to(compute) + (1 - alpha) * f
    onehot = torch.nn.functional.one_hot(labels.long(), z_adv.shape[1]).to(compute)
    return r * rows + (1 - r) * onehot, rows


def soft_cross_entropy(logits, target):
    """Batch mean of sum_k -target_k * log_softmax(logits)_k. Differentiable in logits only.

    The target need not sum to one (SGLR's zero-initialised table does not), so the gradient with respect to
    logits is (sum(target) * softmax(logits) - target) / B, which autograd of this expression gives.
    """
    compute = torch.promote_types(logits.dtype, torch.float32)
    logp = torch.log_softmax(logits.to(compute), dim=1)
    return -(target.detach().to(compute) * logp).sum(dim=1).mean()


def soft_cross_entropy_forward(logits, target):
    """What the fused kernels compute in their single forward pass: per-row losses and the gradient.

    row_loss[i] = sum_k -target_ik * log_softmax(logits)_ik                 (batch loss = row_loss.mean())
    grad[i]     = (sum_k target_ik * softmax(logits)_i - target_i) / B     (d loss / d logits, in logits' dtype)
    The gradient is the closed form of autograd through ``soft_cross_entropy``; the tests check that they agree.
    """
    compute = torch.promote_types(logits.dtype, torch.float32)
    logp = torch.log_softmax(logits.detach().to(compute), dim=1)
    y = target.detach().to(compute)
    row_loss = -(y * logp).sum(dim=1)
    grad = (y.sum(dim=1, keepdim=True) * logp.exp() - y) / logits.shape[0]
    return row_loss, grad.to(logits.dtype)


def sglr_forward(logits_adv, logits_clean, labels, index, table, r, temperature, alpha, lam):
    """The fused SGLR forward pass: update ``table[index]`` in place, return (row_loss, grad_logits_adv).

    ``sglr_loss`` is ``row_loss.mean()`` with ``grad_logits_adv`` as its gradient.
    """
    y, rows = sglr_target(logits_adv, logits_clean, labels, table[index], r, temperature, alpha, lam)
    table[index] = rows.to(table.dtype)
    return soft_cross_entropy_forward(logits_adv, y)


def sglr_loss(logits_adv, logits_clean, labels, index, table, r, temperature, alpha, lam):
    """SGLR in one call: update ``table[index]`` in place with the EMA, then the soft-target CE of logits_adv.

    ``index`` holds each sample's row in the N x K float32 table; indices are unique within a batch.
    Gradient flows to logits_adv only (the target is a constant, as in the paper).
    """
    y, rows = sglr_target(logits_adv, logits_clean, labels, table[index], r, temperature, alpha, lam)
    with torch.no_grad():
        table[index] = rows.to(table.dtype)
    return soft_cross_entropy(logits_adv, y)
