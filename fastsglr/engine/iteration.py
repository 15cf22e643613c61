"""One training iteration as a plain function: attack -> forwards -> label strategy -> loss -> backward -> SGD.

Both engines run exactly this; they differ only in how (eager fp32, or compiled / mixed precision / graphed).
It never syncs with the host: metrics go into the meter's device accumulators. ``eval_step`` is the same for one
batch of the per-epoch test evaluation. Both call the ops of the op set ``ops`` their engine was built with.
"""

import torch

from fastsglr.kernels import PLAIN_OPS

from ..attacks import pgd
from ..awp import add_to_weights
from ..distributed import unwrap
from ..metrics import total_grad_norm
from ..objectives import objective_loss


def _autocast(x, dtype):
    """Mixed precision for the forwards (attack included) when ``dtype`` is given; a no-op context otherwise.

    Without autocast's cache of cast weights: each attack step's input gradient consumes the graph that the cached
    casts belong to, which torch.compile refuses to trace.
    """
    return torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None, cache_enabled=False)


def train_step(
    model, optimizer, strategy, objective, batch, meter, step, *, ops=PLAIN_OPS, autocast_dtype=None, scaler=None
):
    """One iteration on ``batch`` with the ``objectives.Objective`` ``objective``; returns the (detached) loss.

    ``autocast_dtype`` (bf16 / fp16) runs the forwards under autocast; backward and update stay outside it.
    ``scaler`` (fp16) has torch.amp.GradScaler's interface: the loss is scaled for the backward, the gradients
    unscaled before their norm and the update, which is skipped when they overflowed.
    """
    with _autocast(batch.images, autocast_dtype):
        loss, logits_adv, logits_clean, awp_diff = objective_loss(
            model, batch.images, batch.labels, batch.index, strategy, objective, ops
        )
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    grad_norm = total_grad_norm(model.parameters())
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    if awp_diff is not None:  # AWP's restore: the update stays, the perturbation goes
        add_to_weights(unwrap(model), awp_diff, -1.0)
    meter.update(loss, logits_adv, logits_clean, batch.labels, batch.clean_labels, grad_norm, step)
    return loss.detach()


def eval_step(model, images, labels, clean, adv, *, eps, step_size, steps, ops=PLAIN_OPS, autocast_dtype=None):
    """One test batch, model in eval mode: clean predictions into ``clean``, PGD (CE, random start) ones into ``adv``
    (two CalibrationMeters)."""
    with _autocast(images, autocast_dtype):
        with torch.no_grad():
            clean.update(model(images), labels)
        x_adv = pgd(model, images, labels, eps=eps, step_size=step_size, steps=steps, ops=ops)
        with torch.no_grad():
            adv.update(model(x_adv), labels)
