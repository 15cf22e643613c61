"""One training step's loss: the adversarial objective (PGD-AT or TRADES; or standard training, no attack) combined
with a label strategy, or for PGD-AT with Chen et al.'s knowledge distillation (``distill.py``).

``objective_loss`` crafts the attack, runs the forwards and returns the loss; the caller runs backward and the
optimizer step. The order and BatchNorm mode of every forward are part of the method, since BN running
statistics depend on them; they are spelled out per method below.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from fastsglr.kernels import PLAIN_OPS

from .attacks import pgd, trades_attack
from .awp import add_to_weights, weight_perturbation
from .distributed import unwrap
from .errors import UsageError


@dataclass(frozen=True)
class Objective:
    """The adversarial objective's settings as the training iteration reads them: what shapes the computation as
    Python values (a new value compiles a new graph), the numbers as 0-d float64 tensors on the training device (a
    new value changes memory only: a compiled iteration neither recompiles nor guards on it; float64 holds the
    config's Python float exactly, so eager arithmetic rounds as it did with the float)."""

    method: str
    attack_bn_mode: str
    attack_steps: int
    eps: Tensor
    step_size: Tensor
    trades_beta: Tensor
    trades_start: str  # TRADES' attack start (attacks.trades_attack): uniform for TRADES + SGLR
    awp: bool = False  # AWP (awp.py) on: its proxy step is part of the graph
    awp_warmup: int = 0
    awp_gamma: Tensor = None  # 0 before epoch awp_warmup (start_epoch), the config's gamma from then on
    awp_gamma_value: float = 0.0
    distill: object = None  # distill.Distillation (KD-AT): its loss replaces PGD-AT's label term; None: off

    def start_epoch(self, epoch: int) -> None:
        """AWP's warm-up (``if epoch >= args.awp_warmup``): gamma 0 before ``awp_warmup``, a device fill (no sync)."""
        if self.awp:
            self.awp_gamma.fill_(self.awp_gamma_value if epoch >= self.awp_warmup else 0.0)

    @classmethod
    def from_config(cls, cfg, device, distill=None) -> "Objective":
        if cfg.method not in _METHODS:
            raise UsageError(f"unknown method '{cfg.method}': choose one of {', '.join(_METHODS)}")
        eps, step_size, beta = (
            torch.tensor(v, dtype=torch.float64, device=device) for v in (cfg.eps, cfg.step_size, cfg.trades_beta)
        )
        gamma = torch.tensor(cfg.awp_gamma, dtype=torch.float64, device=device)
        return cls(
            cfg.method,
            cfg.attack_bn_mode,
            cfg.attack_steps,
            eps,
            step_size,
            beta,
            "uniform" if cfg.labels == "sglr" else "gaussian",
            cfg.awp_gamma > 0,
            cfg.awp_warmup,
            gamma,
            cfg.awp_gamma,
            distill,
        )


def _perturb_weights(inner, x, x_adv, labels, objective):
    """AWP (awp.py), the model in train mode: perturb the weights before the training forwards; the caller removes
    the perturbation after the optimizer step. None when AWP is off."""
    if not objective.awp:
        return None
    diff = weight_perturbation(inner, x, x_adv, labels, objective)
    add_to_weights(inner, diff, 1.0)
    return diff


def _pgd_at(model, x, labels, index, strategy, objective, ops):
    """Madry's PGD-AT with the strategy's label term on the adversarial logits.

    Forwards, in order:
    1. If the strategy does not need train-mode clean logits: a no-grad clean forward in EVAL mode, before the
       attack. It never touches BN running statistics, so hard labels stay exactly Madry's PGD-AT; its logits give
       the clean training accuracy and TE's ensembled predictions (Dong et al.'s code also takes them in eval mode
       before the attack).
    2. The attack, in the objective's ``attack_bn_mode``, maximising CE plus the strategy's ``attack_term`` (TE's
       consistency term).
    3. AWP, if on: the proxy step in train mode (no BN statistics touched) and the weights perturbed.
    4. The adversarial forward in train mode, with grad.
    5. If the strategy needs them (SGLR after warm-up): a no-grad clean forward in TRAIN mode, AFTER the adversarial
       one, as in the authors' released SGLS code, so BN running statistics see the clean batch last (with AWP, on
       the perturbed weights, like every training forward).
    Under DDP only the forward with grad (3) goes through the DDP wrapper; the others run on the module inside it.
    """
    inner = unwrap(model)
    extra = None
    if not strategy.needs_clean_logits:
        model.eval()
        with torch.no_grad():
            logits_clean = inner(x)
        extra = strategy.attack_term(logits_clean, index)
    model.train(objective.attack_bn_mode == "train")
    x_adv = pgd(
        inner,
        x,
        labels,
        eps=objective.eps,
        step_size=objective.step_size,
        steps=objective.attack_steps,
        extra=extra,
        ops=ops,
    )
    model.train()
    awp_diff = _perturb_weights(inner, x, x_adv, labels, objective)
    logits_adv = model(x_adv)
    if strategy.needs_clean_logits:
        with torch.no_grad():
            logits_clean = inner(x)
    loss = strategy.loss(logits_adv, logits_clean.detach(), labels, index, ce_on="adv", ops=ops)
    if objective.distill is not None:  # KD-AT: the teachers' terms beside the (down-weighted) hard-label CE
        loss = objective.distill.loss(loss, logits_adv, x_adv)
    return loss, logits_adv, logits_clean, awp_diff


def _trades(model, x, labels, index, strategy, objective, ops):
    """TRADES: label term on the clean logits + beta * KL(f(x) || f(x_adv)) with batchmean reduction.

    The attack runs in the objective's ``attack_bn_mode`` from its ``trades_start`` (uniform in the eps-ball for
    TRADES + SGLR, as the authors' TRADES+SGLS; TRADES' 0.001 * N(0, 1) otherwise); then AWP's proxy step if on
    (train mode, weights perturbed); then, in train mode and with grad, the clean forward and after it the
    adversarial one. TRADES' own code runs the clean forward twice (once for CE, once for the KL target); one forward
    feeds both here, so BN running statistics see the clean batch once instead of twice.
    """
    model.train(objective.attack_bn_mode == "train")
    x_adv = trades_attack(
        unwrap(model),
        x,
        eps=objective.eps,
        step_size=objective.step_size,
        steps=objective.attack_steps,
        start=objective.trades_start,
        ops=ops,
    )
    model.train()
    awp_diff = _perturb_weights(unwrap(model), x, x_adv, labels, objective)
    logits_clean = model(x)
    logits_adv = model(x_adv)
    natural = strategy.loss(logits_adv, logits_clean, labels, index, ce_on="clean", ops=ops)
    robust = F.kl_div(
        torch.log_softmax(logits_adv.float(), dim=1), torch.softmax(logits_clean.float(), dim=1), reduction="batchmean"
    )
    # beta cast to the loss's float32 first: two 0-d tensors would otherwise promote the loss to float64.
    return natural + objective.trades_beta.to(robust.dtype) * robust, logits_adv, logits_clean, awp_diff


def _standard(model, x, labels, index, strategy, objective, ops):
    """Standard training on the clean inputs, no attack (Chen et al.'s ``train_epoch`` in ``utils.py``, their
    ``main_std.py``: the standard-trained teacher of KD): one train-mode forward with grad, the label term on its
    logits, which stand for both the adversarial and the clean ones in the training metrics. AWP, if on, perturbs
    the weights against the clean CE."""
    model.train()
    awp_diff = _perturb_weights(unwrap(model), x, x, labels, objective)
    logits = model(x)
    loss = strategy.loss(logits, logits, labels, index, ce_on="clean", ops=ops)
    return loss, logits, logits.detach(), awp_diff


_METHODS = {"pgd-at": _pgd_at, "trades": _trades, "standard": _standard}


def objective_loss(model, x, labels, index, strategy, objective: Objective, ops=PLAIN_OPS):
    """Return ``(loss, logits_adv, logits_clean, awp_diff)`` for one batch; leaves the model in train mode.

    ``awp_diff``: None, or (AWP on) the perturbation now added to the weights, which the caller subtracts after the
    optimizer step (``awp.add_to_weights(model, awp_diff, -1.0)``).

    ``index`` holds each sample's row in the strategy's per-sample tables; ``ops`` is the op set the attack and the
    label strategy call (the plain definitions unless an engine passes its own).
    """
    return _METHODS[objective.method](model, x, labels, index, strategy, objective, ops)
