"""Label strategies against float64 loops written independently of the implementation.

Each dynamics test simulates 3 epochs over a small training set: every epoch visits the first 12 of 14 samples in a
fresh order (so rows are revisited across epochs and 2 rows are never touched), with fresh random logits per step.
"""

import dataclasses
import math

import pytest
import torch

from fastsglr.config import Config
from fastsglr.errors import UsageError
from fastsglr.labels import (
    HardLabels,
    LabelSmoothing,
    SelfGuidedLabelRefinement,
    TemporalEnsembling,
    build_label_strategy,
)

N, K, B, EPOCHS, VISITED = 14, 5, 4, 3, 12

PRESETS = {
    "paper": dict(r=0.2, temperature=1.5, ema_momentum=0.9, lam=0.2),
    "sgls-code": dict(r=1.0, temperature=1.0, ema_momentum=0.9, lam=0.2),
}


def softmax64(z):
    e = torch.exp(z - z.max())
    return e / e.sum()


def log_softmax64(z):
    return z - z.max() - torch.log(torch.exp(z - z.max()).sum())


def schedule(seed):
    """(epoch, index, logits_adv, logits_clean) for 3 epochs of batches over the first VISITED samples."""
    gen = torch.Generator().manual_seed(seed)
    steps = []
    for epoch in range(EPOCHS):
        order = torch.randperm(VISITED, generator=gen)
        for start in range(0, VISITED, B):
            index = order[start : start + B]
            steps.append((epoch, index, 2 * torch.randn(B, K, generator=gen), 2 * torch.randn(B, K, generator=gen)))
    return steps


def train_labels(seed=100):
    return torch.randint(0, K, (N,), generator=torch.Generator().manual_seed(seed))


def sglr_reference(table, steps, labels_all, r, temperature, ema_momentum, lam, warmup):
    """Float64 SGLR, one row at a time: hard CE before warm-up ends, then update-then-use EMA and soft CE."""
    table = table.double().clone()
    losses, updates = [], torch.zeros(N, dtype=torch.long)
    for epoch, index, z_adv, z_clean in steps:
        z_adv, z_clean = z_adv.double(), z_clean.double()
        total = 0.0
        for b in range(B):
            i, y = int(index[b]), int(labels_all[index[b]])
            logp = log_softmax64(z_adv[b])
            if epoch < warmup:
                total += -logp[y]
                continue
            f = lam * softmax64(z_clean[b] / temperature) + (1 - lam) * softmax64(z_adv[b] / temperature)
            table[i] = ema_momentum * table[i] + (1 - ema_momentum) * f
            updates[i] += 1
            target = r * table[i]
            target[y] += 1 - r
            total += -(target * logp).sum()
        losses.append(total / B)
    return table, losses, updates


def make_sglr(preset, init, warmup):
    cfg = Config(labels="sglr", ema_init=init, sglr_warmup=warmup, **PRESETS[preset])
    return build_label_strategy(cfg, train_labels(), K)


@pytest.mark.parametrize("warmup", [0, 1])
@pytest.mark.parametrize("init", ["onehot", "zeros"])
@pytest.mark.parametrize("preset", list(PRESETS))
def test_sglr_dynamics_match_float64_loop(preset, init, warmup):
    labels_all = train_labels()
    strategy = make_sglr(preset, init, warmup)
    table0 = torch.eye(K)[labels_all] if init == "onehot" else torch.zeros(N, K)
    torch.testing.assert_close(strategy.table, table0, atol=0, rtol=0)

    steps = schedule(seed=len(preset) + 10 * len(init) + 100 * warmup)
    ref_table, ref_losses, updates = sglr_reference(table0, steps, labels_all, **PRESETS[preset], warmup=warmup)
    epoch_seen = -1
    for (epoch, index, z_adv, z_clean), ref_loss in zip(steps, ref_losses):
        if epoch != epoch_seen:
            strategy.start_epoch(epoch)
            epoch_seen = epoch
            assert strategy.needs_clean_logits is (epoch >= warmup)
            if epoch == warmup:  # warm-up epochs left the table alone
                torch.testing.assert_close(strategy.table, table0, atol=0, rtol=0)
        loss = strategy.loss(z_adv, z_clean, labels_all[index], index, ce_on="adv")
        assert loss.shape == () and torch.isfinite(loss)
        assert abs(loss.item() - ref_loss.item()) < 1e-5 * max(1.0, abs(ref_loss.item()))
    torch.testing.assert_close(strategy.table.double(), ref_table, atol=1e-6, rtol=1e-6)
    # Rows never visited keep their initial value exactly.
    torch.testing.assert_close(strategy.table[VISITED:], table0[VISITED:], atol=0, rtol=0)
    if init == "zeros":  # a zero-initialised row sums to 1 - alpha^t after t updates
        expected_sums = 1 - PRESETS[preset]["ema_momentum"] ** updates.double()
        torch.testing.assert_close(strategy.table.sum(1).double(), expected_sums, atol=1e-6, rtol=0)
        assert (updates[:VISITED] == EPOCHS - warmup).all()


def sglr_target64(z_adv, z_clean, y, rows, r, temperature, ema_momentum, lam):
    """Float64 target and updated rows of one batch, vectorised (for the single-step tests)."""
    z_adv, z_clean = z_adv.double(), z_clean.double()
    f = lam * torch.softmax(z_clean / temperature, 1) + (1 - lam) * torch.softmax(z_adv / temperature, 1)
    new_rows = ema_momentum * rows.double() + (1 - ema_momentum) * f
    return r * new_rows + (1 - r) * torch.eye(K, dtype=torch.float64)[y], new_rows


def random_batch(seed):
    gen = torch.Generator().manual_seed(seed)
    index = torch.randperm(N, generator=gen)[:B]
    z_adv = (2 * torch.randn(B, K, generator=gen)).requires_grad_(True)
    z_clean = (2 * torch.randn(B, K, generator=gen)).requires_grad_(True)
    return index, z_adv, z_clean


def no_grad_reached(t):
    return t.grad is None or bool((t.grad == 0).all())


@pytest.mark.parametrize("init", ["onehot", "zeros"])
def test_sglr_gradient_is_sum_y_softmax_minus_y_over_batch(init):
    labels_all = train_labels()
    strategy = make_sglr("paper", init, 0)
    rows_before = strategy.table.clone()
    index, z_adv, z_clean = random_batch(21)
    loss = strategy.loss(z_adv, z_clean, labels_all[index], index)
    loss.backward()
    y, _ = sglr_target64(z_adv.detach(), z_clean.detach(), labels_all[index], rows_before[index], **PRESETS["paper"])
    expected = (y.sum(1, keepdim=True) * torch.softmax(z_adv.detach().double(), 1) - y) / B
    torch.testing.assert_close(z_adv.grad.double(), expected, atol=1e-7, rtol=1e-5)
    assert no_grad_reached(z_clean)
    if init == "zeros":  # the case the general formula exists for: y does not sum to 1
        assert (y.sum(1) - 1).abs().min() > 0.1


@pytest.mark.parametrize("preset", list(PRESETS))
def test_sglr_clean_path_matches_fused_table_update(preset):
    """TRADES + SGLR (CE on clean logits) must refine exactly like the fused PGD-AT path."""
    labels_all = train_labels()
    fused, clean = make_sglr(preset, "zeros", 0), make_sglr(preset, "zeros", 0)
    for seed in (31, 32, 33):  # repeated batches, so the second and third reuse updated rows
        index, z_adv, z_clean = random_batch(seed)
        index = index if seed != 33 else torch.tensor([0, 1, 2, 3])
        rows_before = clean.table[index].clone()
        fused.loss(z_adv, z_clean.detach(), labels_all[index], index, ce_on="adv")
        loss = clean.loss(z_adv, z_clean, labels_all[index], index, ce_on="clean")
        torch.testing.assert_close(clean.table, fused.table, atol=1e-7, rtol=0)
        y, _ = sglr_target64(z_adv.detach(), z_clean.detach(), labels_all[index], rows_before, **PRESETS[preset])
        expected = -(y * torch.log_softmax(z_clean.detach().double(), 1)).sum(1).mean()
        assert abs(loss.item() - expected.item()) < 1e-6
        z_adv.grad = None
        loss.backward()
        assert no_grad_reached(z_adv) and z_clean.grad.abs().sum() > 0


def test_sglr_warmup_is_plain_cross_entropy_without_table_writes():
    labels_all = train_labels()
    strategy = make_sglr("sgls-code", "onehot", 2)
    strategy.start_epoch(1)
    before = strategy.table.clone()
    index, z_adv, z_clean = random_batch(41)
    for ce_on, z in (("adv", z_adv), ("clean", z_clean)):
        loss = strategy.loss(z_adv, z_clean, labels_all[index], index, ce_on=ce_on)
        expected = -torch.log_softmax(z.detach().double(), 1)[torch.arange(B), labels_all[index]].mean()
        assert abs(loss.item() - expected.item()) < 1e-6
    assert torch.equal(strategy.table, before) and not strategy.needs_clean_logits
    strategy.start_epoch(2)
    assert strategy.needs_clean_logits
    strategy.loss(z_adv, z_clean, labels_all[index], index)
    assert not torch.equal(strategy.table[index], before[index])


@pytest.mark.parametrize("ce_on", ["adv", "clean"])
def test_hard_and_ls_targets(ce_on):
    labels_all = train_labels()
    index, z_adv, z_clean = random_batch(51)
    y = labels_all[index]
    logp = torch.log_softmax((z_adv if ce_on == "adv" else z_clean).detach().double(), 1)
    hard = build_label_strategy(Config(labels="hard"), labels_all, K)
    assert isinstance(hard, HardLabels) and not hard.needs_clean_logits
    assert abs(hard.loss(z_adv, z_clean, y, index, ce_on=ce_on).item() + logp[torch.arange(B), y].mean()) < 1e-6
    for r in (0.2, 0.5):
        ls = build_label_strategy(Config(labels="ls", r=r), labels_all, K)
        assert isinstance(ls, LabelSmoothing) and not ls.needs_clean_logits
        target = torch.full((B, K), r / K, dtype=torch.float64)
        target[torch.arange(B), y] += 1 - r
        expected = -(target * logp).sum(1).mean()
        assert abs(ls.loss(z_adv, z_clean, y, index, ce_on=ce_on).item() - expected.item()) < 1e-6


def dong_weight(e, start, end, weight):
    """``sigmoid_rampup`` of Dong et al.'s train_te.py times --reg-weight, at their 1-based epoch e."""
    if e < start:
        return 0.0
    if e >= end:
        return weight
    return weight * math.exp(-5 * (1 - (e - start) / (end - start)) ** 2)


def test_te_weight_schedule_is_dong_et_al_sigmoid_ramp_scaled_with_the_epochs():
    labels_all = train_labels()
    for epochs, start, end in ((200, 90, 150), (20, 9, 15), (40, 18, 30)):
        strategy = build_label_strategy(Config(labels="te", epochs=epochs), labels_all, K)
        for epoch in range(epochs):
            strategy.start_epoch(epoch)
            want = dong_weight(epoch + 1, start, end, 300.0)
            assert abs(float(strategy.consistency_weight) - want) <= 1e-6 * want
            assert bool(strategy.updating) == (epoch + 1 >= start)
    assert abs(dong_weight(120, 90, 150, 300.0) - 300 * math.exp(-5 * 0.25)) < 1e-12  # half-way: e^-1.25


def te_reference(steps, labels_all, momentum, weight, start, end, ce_on):
    """Float64 TE as Dong et al.'s PGD_TE: table frozen and no term before epoch start, then update-then-use EMA
    of clean softmax bias-corrected by the row sum, consistency a mean over batch x classes."""
    ensemble = torch.zeros(N, K, dtype=torch.float64)
    losses = []
    for epoch, index, z_adv, z_clean in steps:
        e = epoch + 1
        w = dong_weight(e, start, end, weight)
        z = (z_adv if ce_on == "adv" else z_clean).double()
        total = 0.0
        for b in range(B):
            i, y = int(index[b]), int(labels_all[index[b]])
            total += -log_softmax64(z[b])[y]
            if e >= start:
                ensemble[i] = momentum * ensemble[i] + (1 - momentum) * softmax64(z_clean[b].double())
                target = ensemble[i] / ensemble[i].sum()
                total += w * ((softmax64(z[b]) - target) ** 2).mean()
        losses.append(total / B)
    return ensemble, losses


@pytest.mark.parametrize("start,end", [(1, 3), (2, 3), (3, 2)])
@pytest.mark.parametrize("ce_on", ["adv", "clean"])
def test_te_dynamics_match_float64_loop(ce_on, start, end):
    labels_all = train_labels()
    strategy = TemporalEnsembling(N, K, 0.8, 300.0, start, end)
    assert not strategy.needs_clean_logits
    steps = schedule(seed=61 + start)
    ref_table, ref_losses = te_reference(steps, labels_all, 0.8, 300.0, start, end, ce_on)
    epoch_seen = -1
    for (epoch, index, z_adv, z_clean), ref_loss in zip(steps, ref_losses):
        if epoch != epoch_seen:
            strategy.start_epoch(epoch)
            epoch_seen = epoch
        z_adv, z_clean = z_adv.requires_grad_(True), z_clean.requires_grad_(True)
        loss = strategy.loss(z_adv, z_clean, labels_all[index], index, ce_on=ce_on)
        assert abs(loss.item() - ref_loss.item()) < 1e-5 * max(1.0, abs(ref_loss.item()))
        loss.backward()
        assert no_grad_reached(z_adv if ce_on == "clean" else z_clean)  # the target is a constant
        if epoch + 1 < start:
            assert (strategy.ensemble == 0).all()  # frozen before the start
    torch.testing.assert_close(strategy.ensemble.double(), ref_table, atol=1e-6, rtol=1e-6)
    assert (strategy.ensemble[VISITED:] == 0).all() and strategy.ensemble.abs().sum() > 0


def test_te_attack_term_gradient_matches_float64_autograd():
    """The term PGD-AT + TE's attack adds to CE: its gradient in the logits equals the float64 autograd of
    w * sum_i mean_k (softmax(z_i) - p^_i)^2 (Dong et al.'s w * mean over batch x classes, times B like the summed
    attack CE), with p^ from the table after this step's update."""
    labels_all = train_labels()
    strategy = TemporalEnsembling(N, K, 0.7, 300.0, 1, 3)
    for epoch, index, z_adv, z_clean in schedule(seed=81)[:6]:  # fill the table over some steps
        strategy.start_epoch(epoch)
        strategy.loss(z_adv, z_clean, labels_all[index], index)
    strategy.start_epoch(1)
    index, z_adv, z_clean = random_batch(83)
    rows = 0.7 * strategy.ensemble[index].double() + 0.3 * torch.softmax(z_clean.double(), 1)
    target = rows / rows.sum(1, keepdim=True)
    w = dong_weight(2, 1, 3, 300.0)
    table_before = strategy.ensemble.clone()
    term = strategy.attack_term(z_clean, index)
    z = z_adv.detach().clone().requires_grad_(True)
    (got,) = torch.autograd.grad(term(z), z)
    z64 = z_adv.detach().double().requires_grad_(True)
    (want,) = torch.autograd.grad(w * ((torch.softmax(z64, 1) - target) ** 2).mean(1).sum(), z64)
    assert want.abs().max() > 1e-2  # material next to CE's gradient (entries up to 1)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-7)
    assert torch.equal(strategy.ensemble, table_before)  # the loss updates the table, not the attack's term


def test_tables_round_trip_through_state_dict():
    labels_all = train_labels()
    index, z_adv, z_clean = random_batch(71)
    for cfg, key in (
        (Config(labels="sglr", ema_init="zeros"), "table"),
        (Config(labels="te", te_start=0.0), "ensemble"),
    ):
        trained = build_label_strategy(cfg, labels_all, K)
        trained.start_epoch(0)
        trained.loss(z_adv, z_clean.detach(), labels_all[index], index)
        state = trained.state_dict()
        assert list(state) == [key]  # per-epoch settings are recomputed by start_epoch, not saved
        fresh = build_label_strategy(cfg, labels_all, K)
        fresh.load_state_dict(state)
        assert torch.equal(getattr(fresh, key), getattr(trained, key)) and getattr(fresh, key).abs().sum() > 0
    assert build_label_strategy(Config(labels="hard"), labels_all, K).state_dict() == {}


def test_sglr_onehot_init_uses_the_given_training_labels():
    labels_all = train_labels(seed=7)
    strategy = build_label_strategy(Config(labels="sglr", ema_init="onehot"), labels_all, K)
    assert isinstance(strategy, SelfGuidedLabelRefinement)
    assert torch.equal(strategy.table.argmax(1), labels_all) and torch.equal(strategy.table.sum(1), torch.ones(N))


def test_bad_names_are_usage_errors():
    labels_all = train_labels()
    with pytest.raises(UsageError):
        build_label_strategy(dataclasses.replace(Config(), labels="mixup"), labels_all, K)
    index, z_adv, z_clean = random_batch(81)
    with pytest.raises(UsageError):
        HardLabels().loss(z_adv, z_clean, labels_all[index], index, ce_on="both")
