"""Adversarial Weight Perturbation (Wu et al., NeurIPS 2020, "Adversarial Weight Perturbation Helps Robust
Generalization"), as its public code (csdongxian/AWP, ``utils_awp.py``: ``AdvWeightPerturb``, ``TradesAWP``) runs it.

After the attack, one ascent step on a proxy copy of the weights: the proxy, in train mode, takes one plain SGD step
(no momentum, no weight decay) on the NEGATED training loss of the hard labels (PGD-AT: CE on x_adv; TRADES:
CE(f(x), y) + beta * batchmean KL(f(x_adv) || f(x))). For every parameter whose name holds "weight" and whose
dimension exceeds 1 (conv and linear weights; not BN, not biases) the change d = w_proxy - w is rescaled to
``||w|| / (||d|| + 1e-20) * d`` (``diff_in_weights``) and added times gamma to the model's weights (``perturb``);
the training forwards, backward and optimizer step run on the perturbed weights, and the same gamma * d is
subtracted after the step (``restore``). The proxy's BN runs in train mode on a copy: the model's running
statistics never see the proxy forwards.

Here the proxy is a functional computation: the gradient g of the proxy loss with respect to the selected weights
(torch.func.grad through functional_call, with copies of the buffers), and d = proxy_lr * g, which is what one plain
SGD step on the negated loss moves the proxy by. The label strategy (LS, TE, SGLR) shapes the training loss only:
the ascent uses the hard labels, as AWP's code does, so no per-sample table is touched twice.
"""

import torch
import torch.nn.functional as F
from torch.func import functional_call

# The proxy optimizer's learning rate of AWP's PGD-AT script (0.01; its TRADES script uses the model's lr, 0.1). The
# rescaling to ||w|| removes it from the perturbation except through the 1e-20 guard, so the value matters only there.
PROXY_LR = 0.01
NORM_GUARD = 1e-20  # utils_awp.py's EPS in diff_in_weights


def perturbed_names(model) -> list:
    """The parameters AWP perturbs: names holding 'weight' with more than one dimension (``diff_in_weights``)."""
    return [name for name, p in model.named_parameters() if "weight" in name and p.dim() > 1]


def _proxy_loss(logits_of, x, x_adv, labels, objective):
    """The hard-label training loss AWP's proxy ascends (mean CE; TRADES adds beta * batchmean KL)."""
    if objective.method == "trades":
        logits_clean = logits_of(x).float()
        robust = F.kl_div(
            torch.log_softmax(logits_of(x_adv).float(), dim=1),
            torch.softmax(logits_clean, dim=1),
            reduction="batchmean",
        )
        return F.cross_entropy(logits_clean, labels) + objective.trades_beta.to(robust.dtype) * robust
    return F.cross_entropy(logits_of(x_adv).float(), labels)


def weight_perturbation(model, x, x_adv, labels, objective) -> dict:
    """gamma * ||w|| / (||d|| + 1e-20) * d per perturbed weight, d = PROXY_LR * grad of the proxy loss at the model's
    weights, on copies of the buffers (the model's running statistics stay as they are). The caller puts the model
    in train mode first, as AWP's ``calc_awp`` does with its proxy.

    ``objective.awp_gamma`` (a 0-d device tensor) is 0 during the warm-up epochs: the perturbation is then exactly 0.
    """
    names = perturbed_names(model)
    others = {name: p.detach() for name, p in model.named_parameters() if name not in names}

    def loss_at(weights, buffers):
        def logits_of(inputs):
            return functional_call(model, ({**others, **weights}, buffers), (inputs,))

        return _proxy_loss(logits_of, x, x_adv, labels, objective)

    weights = {name: p.detach() for name, p in model.named_parameters() if name in names}
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    with torch.no_grad():
        grads = torch.func.grad(loss_at)(weights, buffers)
        diff = {}
        for name, w in weights.items():
            d = PROXY_LR * grads[name]
            scale = objective.awp_gamma.to(w.dtype) * w.norm() / (d.norm() + NORM_GUARD)
            diff[name] = scale * d
    return diff


def add_to_weights(model, diff: dict, sign: float) -> None:
    """w += sign * diff for each perturbed weight (``add_into_weights``), in place, outside autograd."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, d in diff.items():
            params[name].add_(d, alpha=sign)
