"""Hutchinson's estimator of the trace of a loss's Hessian w.r.t. parameters: tr(H) = E[v^T H v] for probes v with
independent Rademacher (+-1) entries (Hutchinson 1990; Avron & Toledo 2011). Each v^T H v takes one Hessian-vector
product by double backward (Pearlmutter 1994): differentiate <grad L, v> once more. The paper's Fig. B.7 plots this
trace as its measure of sharpness ("trace of hessian, which is widely used to measure the sharpness", Sec. B.5).

With Rademacher probes, Var(v^T H v) = 2 (||H||_F^2 - sum_i H_ii^2): the off-diagonal entries alone make the noise,
and the mean over all 2^n sign vectors is tr(H) exactly (every product v_i v_j, i != j, averages to zero).
"""

import torch


def rademacher(params, generator) -> list:
    """One probe: independent +-1 entries shaped like ``params``, drawn from ``generator``."""
    return [
        torch.randint(0, 2, p.shape, generator=generator, device=p.device).to(p.dtype).mul_(2).sub_(1) for p in params
    ]


def quadratic_forms(loss, params, probes) -> torch.Tensor:
    """v^T H v for each probe v (a list of tensors shaped like ``params``), H the Hessian of ``loss`` w.r.t.
    ``params``: one double backward per probe through the first gradient's graph."""
    grads = torch.autograd.grad(loss, params, create_graph=True)
    values = []
    for i, v in enumerate(probes):
        hv = torch.autograd.grad(grads, params, grad_outputs=v, retain_graph=i + 1 < len(probes))
        values.append(sum((a * b).sum() for a, b in zip(v, hv)))
    return torch.stack(values)


def hutchinson_trace(loss, params, probes: int, generator) -> torch.Tensor:
    """``probes`` Rademacher samples of v^T H v (their mean estimates tr(H), their spread its standard error)."""
    return quadratic_forms(loss, params, [rademacher(params, generator) for _ in range(probes)])
