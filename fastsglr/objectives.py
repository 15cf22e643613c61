"""One training step's loss: the adversarial objective (PGD-AT or TRADES) combined with a label strategy.

``objective_loss`` crafts the attack, runs the forwards and returns the loss; the caller runs backward and the
optimizer step. The order and BatchNorm mode of every forward are part of the method, since BN running
statistics depend on them; they are spelled out per method below.
"""
import torch
import torch.nn.functional as F

from .attacks import pgd, trades_attack
from .distributed import unwrap
from .errors import UsageError


def _pgd_at(model, x, labels, index, strategy, cfg):
    """Madry's PGD-AT with the strategy's label term on the adversarial logits.

    Forwards, in order:
    1. If the strategy does not need train-mode clean logits: a no-grad clean forward in EVAL mode, before the
       attack. It never touches BN running statistics, so hard labels stay exactly Madry's PGD-AT; its logits give
       the clean training accuracy and TE's ensembled predictions (Dong et al.'s code also takes them in eval mode
       before the attack).
    2. The attack, in ``cfg.attack_bn_mode``.
    3. The adversarial forward in train mode, with grad.
    4. If the strategy needs them (SGLR after warm-up): a no-grad clean forward in TRAIN mode, AFTER the adversarial
       one, as in the authors' released SGLS code, so BN running statistics see the clean batch last.
    Under DDP only the forward with grad (3) goes through the DDP wrapper; the others run on the module inside it.
    """
    inner = unwrap(model)
    if not strategy.needs_clean_logits:
        model.eval()
        with torch.no_grad():
            logits_clean = inner(x)
    model.train(cfg.attack_bn_mode == "train")
    x_adv = pgd(inner, x, labels, eps=cfg.eps, step_size=cfg.step_size, steps=cfg.attack_steps)
    model.train()
    logits_adv = model(x_adv)
    if strategy.needs_clean_logits:
        with torch.no_grad():
            logits_clean = inner(x)
    loss = strategy.loss(logits_adv, logits_clean.detach(), labels, index, ce_on="adv")
    return loss, logits_adv, logits_clean


def _trades(model, x, labels, index, strategy, cfg):
    """TRADES: label term on the clean logits + beta * KL(f(x) || f(x_adv)) with batchmean reduction.

    The attack runs in ``cfg.attack_bn_mode``; then, in train mode and with grad, the clean forward and after it the
    adversarial one. TRADES' own code runs the clean forward twice (once for CE, once for the KL target); one forward
    feeds both here, so BN running statistics see the clean batch once instead of twice.
    """
    model.train(cfg.attack_bn_mode == "train")
    x_adv = trades_attack(unwrap(model), x, eps=cfg.eps, step_size=cfg.step_size, steps=cfg.attack_steps)
    model.train()
    logits_clean = model(x)
    logits_adv = model(x_adv)
    natural = strategy.loss(logits_adv, logits_clean, labels, index, ce_on="clean")
    robust = F.kl_div(torch.log_softmax(logits_adv.float(), dim=1), torch.softmax(logits_clean.float(), dim=1),
                      reduction="batchmean")
    return natural + cfg.trades_beta * robust, logits_adv, logits_clean


_METHODS = {"pgd-at": _pgd_at, "trades": _trades}


def objective_loss(model, x, labels, index, strategy, cfg):
    """Return ``(loss, logits_adv, logits_clean)`` for one batch; leaves the model in train mode.

    ``index`` holds each sample's row in the strategy's per-sample tables.
    """
    if cfg.method not in _METHODS:
        raise UsageError(f"unknown method '{cfg.method}': choose one of {', '.join(_METHODS)}")
    return _METHODS[cfg.method](model, x, labels, index, strategy, cfg)
