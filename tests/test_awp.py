"""AWP (awp.py) against Wu et al.'s algorithm written out here in float64 with plain autograd and a deep-copied proxy
(csdongxian/AWP utils_awp.py: calc_awp, diff_in_weights, perturb, restore), in both engines."""

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastsglr.attacks import pgd, trades_attack
from fastsglr.config import Config
from fastsglr.data.loaders import Batch
from fastsglr.engine.fast import FastEngine, FastOptions
from fastsglr.engine.reference import ReferenceEngine
from fastsglr.labels import build_label_strategy
from fastsglr.metrics import TrainMeter
from fastsglr.optim import build_optimizer

N, K, B = 24, 4, 8
CFG = Config(eps=16 / 255, step_size=4 / 255, attack_steps=2, labels="hard", lr=0.1, awp_gamma=0.01)


def tiny_bn_net(seed):
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(), nn.Flatten(), nn.Linear(5 * 6 * 6, K)
    )
    net[1].running_mean.uniform_(-0.2, 0.2)
    net[1].running_var.uniform_(0.5, 1.5)
    return net


def make_batch(seed):
    gen = torch.Generator().manual_seed(seed)
    train_labels = torch.randint(0, K, (N,), generator=gen)
    index = torch.randperm(N, generator=gen)[:B]
    images = torch.rand(B, 3, 6, 6, generator=gen)
    return train_labels, Batch(images, train_labels[index], train_labels[index], index)


def one_step(cfg, seed, engine="reference", epoch=0):
    """Our engine's first iteration; returns the model after it, the weights seen by the training forward, x_adv."""
    train_labels, batch = make_batch(seed)
    model = tiny_bn_net(seed)
    strategy = build_label_strategy(cfg, train_labels, K)
    optimizer = build_optimizer(model.parameters(), cfg)
    if engine == "reference":
        eng = ReferenceEngine(model, optimizer, strategy, cfg)
    else:
        eng = FastEngine(model, optimizer, strategy, cfg, FastOptions(precision="fp32", compile=True))
    seen = {}
    if engine == "reference":  # a hook on a submodule of the compiled model would be traced into its graph
        model[4].register_forward_pre_hook(lambda m, args: seen.update(weight=m.weight.detach().clone()))
    strategy.start_epoch(epoch)
    eng.objective.start_epoch(epoch)
    model.train()
    torch.manual_seed(seed + 1)
    eng.step(batch, TrainMeter("cpu"), 0)
    return model, seen, batch


def awp_reference(cfg, seed):
    """Wu et al.'s AT_AWP / TRADES_AWP iteration in float64: attack (eval mode), proxy copy, one SGD step on the
    negated loss, per-layer rescaled diff, perturb, train step with SGD(momentum, wd), restore."""
    _, batch = make_batch(seed)
    model = tiny_bn_net(seed)
    x, y = batch.images, batch.labels
    model.eval()
    torch.manual_seed(seed + 1)
    if cfg.method == "trades":
        x_adv = trades_attack(model, x, eps=cfg.eps, step_size=cfg.step_size, steps=cfg.attack_steps)
    else:
        with torch.no_grad():
            model(x)  # our clean eval forward before the attack (draws no random numbers)
        x_adv = pgd(model, x, y, eps=cfg.eps, step_size=cfg.step_size, steps=cfg.attack_steps)
    model = model.double().train()
    x, x_adv = x.double(), x_adv.double()

    def training_loss(net):
        if cfg.method == "trades":
            clean = net(x)
            kl = F.kl_div(F.log_softmax(net(x_adv), dim=1), F.softmax(clean, dim=1), reduction="batchmean")
            return F.cross_entropy(clean, y) + cfg.trades_beta * kl
        return F.cross_entropy(net(x_adv), y)

    proxy = copy.deepcopy(model).train()
    proxy_opt = torch.optim.SGD(proxy.parameters(), lr=0.01)
    proxy_opt.zero_grad()
    (-training_loss(proxy)).backward()
    proxy_opt.step()
    old, new = model.state_dict(), proxy.state_dict()
    diff = {
        k: old[k].norm() / ((new[k] - old[k]).norm() + 1e-20) * (new[k] - old[k])
        for k in old
        if old[k].dim() > 1 and "weight" in k
    }
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, d in diff.items():
            params[k].add_(cfg.awp_gamma * d)
    perturbed = params["4.weight"].detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    opt.zero_grad()
    training_loss(model).backward()
    opt.step()
    with torch.no_grad():
        for k, d in diff.items():
            params[k].sub_(cfg.awp_gamma * d)
    return model, perturbed


@pytest.mark.parametrize("method,gamma", [("pgd-at", 0.01), ("trades", 0.005)])
def test_awp_step_matches_wu_et_al_in_float64(method, gamma):
    cfg = dataclasses.replace(CFG, method=method, awp_gamma=gamma)
    seed = int(torch.randint(0, 10_000, ()))
    ours, seen, _ = one_step(cfg, seed)
    reference, perturbed = awp_reference(cfg, seed)
    torch.testing.assert_close(seen["weight"].double(), perturbed, rtol=1e-5, atol=1e-6)  # the training forward's
    start = tiny_bn_net(seed).state_dict()
    assert not torch.allclose(seen["weight"], start["4.weight"])  # the perturbation is there ...
    for key, value in reference.state_dict().items():  # ... and gone after the update; BN statistics as the reference
        torch.testing.assert_close(ours.state_dict()[key].double(), value.double(), rtol=1e-5, atol=1e-6, msg=key)


def test_warmup_and_gamma_zero_are_bit_identical_to_no_awp():
    seed = int(torch.randint(0, 10_000, ()))
    plain, _, _ = one_step(dataclasses.replace(CFG, awp_gamma=0.0), seed)
    warming, _, _ = one_step(dataclasses.replace(CFG, awp_warmup=1), seed, epoch=0)
    after, _, _ = one_step(dataclasses.replace(CFG, awp_warmup=1), seed, epoch=1)
    for key, value in plain.state_dict().items():
        assert torch.equal(warming.state_dict()[key], value), key
    assert not torch.equal(after.state_dict()["4.weight"], plain.state_dict()["4.weight"])


@pytest.mark.parametrize("method,labels", [("pgd-at", "hard"), ("trades", "sglr")])
def test_compiled_fast_engine_matches_reference_with_awp(method, labels):
    # No sign steps: compiled and eager input gradients differ by rounding, which flips a sign now and then (TRADES'
    # near-zero KL gradient at its 0.001-noise start does for some seeds with or without AWP); this compares AWP.
    cfg = dataclasses.replace(CFG, method=method, labels=labels, sglr_warmup=0, attack_steps=0)
    seed = int(torch.randint(0, 10_000, ()))
    reference, _, _ = one_step(cfg, seed)
    fast, _, _ = one_step(cfg, seed, engine="fast")
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(fast.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("method", ["pgd-at", "trades"])
def test_awp_iteration_compiles_as_one_graph(method):
    from fastsglr.engine.census import take_census

    census = take_census(
        Config(model="smallcnn", method=method, labels="sglr", attack_steps=1, batch_size=4, awp_gamma=0.01)
    )
    assert (census.graphs, census.graph_breaks) == (1, 0)


def test_digits_demo_with_awp_and_sglr_trains(digits_dir, tmp_path):
    import json

    from fastsglr.cli import main

    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                digits_dir,
                "--out",
                str(out),
                "--preset",
                "demo",
                "--epochs",
                "2",
                "--eval-subset",
                "120",
                "--device",
                "cpu",
                "--labels",
                "sglr",
                "--awp-gamma",
                "0.01",
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[-1]["train_adv_acc"] > rows[0]["train_adv_acc"]  # it learns: robust training accuracy rises ...
    assert rows[-1]["test_clean_acc"] > 30 and rows[-1]["test_pgd_acc"] > 15  # ... and generalises above chance (10%)
    assert json.loads((out / "config.json").read_text())["awp_gamma"] == 0.01
