"""One training iteration as a plain function: attack -> forwards -> label strategy -> loss -> backward -> SGD.

Both engines run exactly this; they differ only in how (eager fp32, or compiled / mixed precision / graphed).
It never syncs with the host: metrics go into the meter's device accumulators.
"""
from ..metrics import total_grad_norm
from ..objectives import objective_loss


def train_step(model, optimizer, strategy, cfg, batch, meter, step):
    loss, logits_adv, logits_clean = objective_loss(model, batch.images, batch.labels, batch.index, strategy, cfg)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = total_grad_norm(model.parameters())
    optimizer.step()
    meter.update(loss, logits_adv, logits_clean, batch.labels, batch.clean_labels, grad_norm, step)
    return loss
