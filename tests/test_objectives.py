"""objective_loss: the loss formulas, the forwards' BatchNorm modes and order, and every method x strategy pair.

References re-run the documented sequence of forwards by hand on a copy of the model with the same RNG seed.
"""

import dataclasses

import pytest
import torch
from torch import nn

from fastsglr.attacks import pgd, trades_attack
from fastsglr.config import BN_MODES, LABEL_STRATEGIES, METHODS, Config
from fastsglr.errors import UsageError
from fastsglr.labels import build_label_strategy
from fastsglr.objectives import Objective, objective_loss

N, K, B = 20, 4, 8


def tiny_bn_net():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * 8 * 8, K),
    )
    # Non-default running statistics, so an eval-mode forward differs from a train-mode one.
    net[1].running_mean.uniform_(-0.2, 0.2)
    net[1].running_var.uniform_(0.5, 1.5)
    return net


def batch(seed=0):
    gen = torch.Generator().manual_seed(seed)
    index = torch.randperm(N, generator=gen)[:B]
    train_labels = torch.randint(0, K, (N,), generator=gen)
    return torch.rand(B, 3, 8, 8, generator=gen), train_labels[index], index, train_labels


def bn_state(model):
    bn = model[1]
    return bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()


def assert_same_bn(a, b):
    for u, v in zip(bn_state(a), bn_state(b)):
        torch.testing.assert_close(u, v, atol=0, rtol=0)


def cfg_for(**kw):
    return Config(eps=16 / 255, step_size=4 / 255, attack_steps=3, **kw)


def run(model, cfg, seed=5, epoch=0):
    x, y, index, train_labels = batch()
    strategy = build_label_strategy(cfg, train_labels, K)
    strategy.start_epoch(epoch)
    torch.manual_seed(seed)
    return objective_loss(model, x, y, index, strategy, Objective.from_config(cfg, "cpu"))[:3], strategy


@pytest.mark.parametrize("labels", LABEL_STRATEGIES)
@pytest.mark.parametrize("method", METHODS)
def test_every_pair_gives_a_finite_differentiable_loss(method, labels):
    model = tiny_bn_net()
    (loss, logits_adv, logits_clean), _ = run(model, cfg_for(method=method, labels=labels))
    assert loss.shape == () and torch.isfinite(loss)
    assert logits_adv.shape == logits_clean.shape == (B, K)
    assert model.training
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("bn_mode", BN_MODES)
def test_pgd_at_hard_is_madry(bn_mode):
    """Loss = CE(model(x_adv)); clean logits come from eval mode and leave BN statistics as Madry's loop does."""
    cfg = cfg_for(method="pgd-at", labels="hard", attack_bn_mode=bn_mode)
    model, manual = tiny_bn_net(), tiny_bn_net()
    x, y, _, _ = batch()
    manual.eval()
    with torch.no_grad():
        expected_clean = manual(x)
    (loss, logits_adv, logits_clean), _ = run(model, cfg, seed=5)

    # Madry's step without any clean forward: attack in bn_mode, one train-mode adversarial forward.
    manual.train(bn_mode == "train")
    torch.manual_seed(5)
    x_adv = pgd(manual, x, y, eps=cfg.eps, step_size=cfg.step_size, steps=cfg.attack_steps)
    manual.train()
    expected_adv = manual(x_adv)
    expected_loss = -torch.log_softmax(expected_adv.detach().double(), 1)[torch.arange(B), y].mean()

    torch.testing.assert_close(logits_adv, expected_adv, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(logits_clean, expected_clean, atol=1e-6, rtol=1e-6)
    assert abs(loss.item() - expected_loss.item()) < 1e-6
    assert_same_bn(model, manual)


def test_attack_bn_mode_decides_which_forwards_update_bn_statistics():
    """Eval-mode attack: only the adversarial forward updates BN. Train-mode attack: each attack step does too."""
    before = bn_state(tiny_bn_net())
    results = {}
    for mode in BN_MODES:
        model = tiny_bn_net()
        run(model, cfg_for(method="pgd-at", labels="hard", attack_bn_mode=mode))
        results[mode] = bn_state(model)
    assert results["eval"][2] - before[2] == 1
    assert results["train"][2] - before[2] == 1 + 3
    assert not torch.allclose(results["eval"][0], results["train"][0])
    assert not torch.allclose(results["eval"][0], before[0])


def test_pgd_at_sglr_runs_clean_forward_in_train_mode_after_the_adversarial_one():
    cfg = cfg_for(method="pgd-at", labels="sglr", r=0.2, temperature=1.5, ema_init="zeros")
    model, manual = tiny_bn_net(), tiny_bn_net()
    x, y, index, train_labels = batch()
    (loss, logits_adv, logits_clean), strategy = run(model, cfg, seed=6)

    manual.eval()
    torch.manual_seed(6)
    x_adv = pgd(manual, x, y, eps=cfg.eps, step_size=cfg.step_size, steps=cfg.attack_steps)
    manual.train()
    expected_adv = manual(x_adv)
    with torch.no_grad():
        expected_clean = manual(x)  # train mode, after the adversarial forward
    torch.testing.assert_close(logits_adv, expected_adv, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(logits_clean, expected_clean, atol=1e-6, rtol=1e-6)
    assert_same_bn(model, manual)
    assert not logits_clean.requires_grad

    # The loss is SGLR's soft CE on the adversarial logits, from the zero-initialised table.
    za, zc = expected_adv.detach().double(), expected_clean.double()
    rows = 0.1 * (0.2 * torch.softmax(zc / 1.5, 1) + 0.8 * torch.softmax(za / 1.5, 1))
    target = 0.2 * rows + 0.8 * torch.eye(K, dtype=torch.float64)[y]
    expected_loss = -(target * torch.log_softmax(za, 1)).sum(1).mean()
    assert abs(loss.item() - expected_loss.item()) < 1e-6
    torch.testing.assert_close(strategy.table[index].double(), rows, atol=1e-7, rtol=1e-6)


def test_pgd_at_sglr_warmup_is_madry():
    """Before sglr_warmup the step is the hard-label step: same loss, same BN statistics, no table writes."""
    sglr_model, hard_model = tiny_bn_net(), tiny_bn_net()
    (warm_loss, _, _), strategy = run(sglr_model, cfg_for(labels="sglr", sglr_warmup=2), epoch=1)
    (hard_loss, _, _), _ = run(hard_model, cfg_for(labels="hard"))
    assert warm_loss.item() == hard_loss.item()
    assert_same_bn(sglr_model, hard_model)
    assert torch.equal(strategy.table, torch.eye(K)[batch()[3]])


def test_pgd_at_te_before_its_start_is_madry_and_after_attacks_the_consistency_term_too():
    """Before te_start (epoch 90 of 200) TE's weight is 0 and its table frozen: the step is the hard-label step bit
    for bit (attack, loss, BN statistics). From the start on, the attack maximises CE + w * consistency, so its
    adversarial logits differ from plain PGD-CE's from the same seed (test_attacks checks the step against float64)."""
    te_model, hard_model = tiny_bn_net(), tiny_bn_net()
    (te_loss, te_adv, _), strategy = run(te_model, cfg_for(labels="te"), epoch=88)
    (hard_loss, hard_adv, _), _ = run(hard_model, cfg_for(labels="hard"))
    assert te_loss.item() == hard_loss.item() and torch.equal(te_adv, hard_adv)
    assert_same_bn(te_model, hard_model)
    assert (strategy.ensemble == 0).all()
    (_, active_adv, _), strategy = run(tiny_bn_net(), cfg_for(labels="te"), epoch=199)
    assert strategy.ensemble.abs().sum() > 0 and not torch.equal(active_adv, hard_adv)


@pytest.mark.parametrize("labels", ["hard", "sglr"])
def test_trades_loss_matches_float64_formula(labels):
    cfg = cfg_for(method="trades", labels=labels, trades_beta=6.0, r=0.2, temperature=1.5, ema_init="onehot")
    model, manual = tiny_bn_net(), tiny_bn_net()
    x, y, _, _ = batch()
    (loss, logits_adv, logits_clean), _ = run(model, cfg, seed=7)

    manual.eval()
    torch.manual_seed(7)
    # The attack starts uniformly in the eps-ball for TRADES + SGLR (the authors' TRADES+SGLS), else as TRADES.
    start = "uniform" if labels == "sglr" else "gaussian"
    x_adv = trades_attack(manual, x, eps=cfg.eps, step_size=cfg.step_size, steps=cfg.attack_steps, start=start)
    manual.train()
    expected_clean, expected_adv = manual(x), manual(x_adv)
    torch.testing.assert_close(logits_clean, expected_clean, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(logits_adv, expected_adv, atol=1e-6, rtol=1e-6)
    assert_same_bn(model, manual)

    # Float64 reference; the soft target is a constant, the KL differentiates through both forwards (as TRADES).
    zc = expected_clean.detach().double().requires_grad_(True)
    za = expected_adv.detach().double().requires_grad_(True)
    onehot = torch.eye(K, dtype=torch.float64)[y]
    if labels == "hard":
        target = onehot
    else:
        f = 0.2 * torch.softmax(zc.detach() / 1.5, 1) + 0.8 * torch.softmax(za.detach() / 1.5, 1)
        target = 0.2 * (0.9 * onehot + 0.1 * f) + 0.8 * onehot
    log_p, log_q = torch.log_softmax(zc, 1), torch.log_softmax(za, 1)
    kl = (log_p.exp() * (log_p - log_q)).sum() / B
    expected = -(target * log_p).sum(1).mean() + 6.0 * kl
    assert kl > 1e-3  # material, so a wrong KL reduction or direction would show
    assert abs(loss.item() - expected.item()) < 1e-5
    got_grads = torch.autograd.grad(loss, [logits_clean, logits_adv])
    for got, want in zip(got_grads, torch.autograd.grad(expected, [zc, za])):
        torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=1e-5)


def test_only_trades_sglr_starts_its_attack_uniformly():
    starts = {
        labels: Objective.from_config(cfg_for(method="trades", labels=labels), "cpu").trades_start
        for labels in ("hard", "ls", "te", "sglr")
    }
    assert starts == {"hard": "gaussian", "ls": "gaussian", "te": "gaussian", "sglr": "uniform"}


def test_unknown_method_is_a_usage_error():
    with pytest.raises(UsageError):
        run(tiny_bn_net(), dataclasses.replace(cfg_for(), method="mart"))


def test_objective_leaves_parameter_grads_to_the_caller():
    model = tiny_bn_net()
    run(model, cfg_for(method="pgd-at", labels="sglr"))
    run(model, cfg_for(method="trades", labels="te"))
    assert all(p.grad is None for p in model.parameters())
