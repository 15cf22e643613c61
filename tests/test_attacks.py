"""PGD and the TRADES attack: constraints, closed-form optima on linear models, and side-effect freedom."""

import pytest
import torch
from torch import nn

from fastsglr.attacks import cw_margin, pgd, trades_attack
from fastsglr.errors import UsageError

EPS = 8 / 255


def tiny_bn_net(num_classes=5, in_channels=3):
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, num_classes),
    )


def linear_model(num_classes, shape, gen):
    """f(x) = W vec(x) + b with moderate weights, so softmax never saturates to exactly 0 or 1."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(shape).prod()), num_classes))
    with torch.no_grad():
        model[1].weight.copy_(torch.randn(model[1].weight.shape, generator=gen) * 0.05)
        model[1].bias.copy_(torch.randn(num_classes, generator=gen) * 0.1)
    return model


def images_with_edges(batch, shape, gen):
    """Random images in which many pixels sit at or within eps of 0 and 1, where the [0, 1] clip binds."""
    x = torch.rand((batch, *shape), generator=gen)
    pick = torch.rand(x.shape, generator=gen)
    x = torch.where(pick < 0.15, torch.rand(x.shape, generator=gen) * EPS / 2, x)
    x = torch.where(pick > 0.85, 1 - torch.rand(x.shape, generator=gen) * EPS / 2, x)
    x = torch.where((pick > 0.4) & (pick < 0.45), torch.zeros_like(x), x)
    return torch.where((pick > 0.45) & (pick < 0.5), torch.ones_like(x), x)


def assert_feasible(x_adv, x, eps):
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize("loss", ["ce", "cw"])
@pytest.mark.parametrize("bn_train", [False, True])
def test_pgd_stays_in_ball_and_image_range(loss, bn_train):
    gen = torch.Generator().manual_seed(1)
    model = tiny_bn_net().train(bn_train)
    x = images_with_edges(16, (3, 8, 8), gen)
    labels = torch.randint(0, 5, (16,), generator=gen)
    x_adv = pgd(model, x, labels, eps=EPS, step_size=EPS / 2, steps=5, loss=loss)
    assert_feasible(x_adv, x, EPS)
    assert not x_adv.requires_grad
    assert model.training is bn_train  # the caller owns the BN mode
    assert (x_adv - x).abs().max() > EPS / 2  # it did move


@pytest.mark.parametrize("loss", ["ce", "cw"])
@pytest.mark.parametrize("random_start", [True, False])
def test_pgd_reaches_closed_form_optimum_of_two_class_linear_model(loss, random_start):
    """Both losses increase in (w_other - w_y) . x, so the box optimum is clip(x - eps * sign(w_y - w_other))."""
    gen = torch.Generator().manual_seed(2)
    shape = (2, 6, 6)
    model = linear_model(2, shape, gen)
    x = images_with_edges(32, shape, gen)
    labels = torch.randint(0, 2, (32,), generator=gen)
    w = model[1].weight.detach()
    direction = torch.sign(w[labels] - w[1 - labels]).view(x.shape)
    expected = (x - EPS * direction).clamp(0, 1)
    # 2.5 eps of travel: enough from any start in the ball.
    x_adv = pgd(model, x, labels, eps=EPS, step_size=EPS / 4, steps=10, loss=loss, random_start=random_start)
    torch.testing.assert_close(x_adv, expected, atol=1e-6, rtol=0)


def test_pgd_cw_raises_margin_above_any_sampled_point():
    """Multi-class linear model: the CW margin at the PGD-CW point beats the clean point and 256 random ones."""
    gen = torch.Generator().manual_seed(3)
    shape = (3, 4, 4)
    model = linear_model(6, shape, gen)
    x = torch.rand((8, *shape), generator=gen)
    labels = torch.randint(0, 6, (8,), generator=gen)
    x_adv = pgd(model, x, labels, eps=EPS, step_size=EPS / 4, steps=20, loss="cw")
    with torch.no_grad():
        z = model(x_adv).double()
        margin = z.scatter(1, labels[:, None], float("-inf")).amax(1) - z.gather(1, labels[:, None]).squeeze(1)
        best_sampled = cw_margin(model(x), labels).double()
        for _ in range(256):
            noise = (torch.rand(x.shape, generator=gen) * 2 - 1) * EPS
            best_sampled = torch.maximum(best_sampled, cw_margin(model((x + noise).clamp(0, 1)), labels).double())
    assert (margin >= best_sampled - 1e-5).all()


def test_pgd_cw_ends_at_the_corner_of_its_runner_up_class():
    """On a linear model the CW margin is linear while the runner-up class j stays the same, so PGD-CW ends at
    clip(x + eps * sign(w_j - w_y)) for the final runner-up j; PGD-CE (which weighs all classes) does not."""
    gen = torch.Generator().manual_seed(12)
    shape = (3, 4, 4)
    model = linear_model(6, shape, gen)
    x = torch.rand((16, *shape), generator=gen)
    labels = torch.randint(0, 6, (16,), generator=gen)
    w = model[1].weight.detach()

    def runner_up_corner(x_adv):
        with torch.no_grad():
            runner_up = model(x_adv).scatter(1, labels[:, None], float("-inf")).argmax(1)
        return (x + EPS * torch.sign(w[runner_up] - w[labels]).view(x.shape)).clamp(0, 1)

    cw = pgd(model, x, labels, eps=EPS, step_size=EPS / 4, steps=20, loss="cw")
    torch.testing.assert_close(cw, runner_up_corner(cw), atol=1e-6, rtol=0)
    ce = pgd(model, x, labels, eps=EPS, step_size=EPS / 4, steps=20, loss="ce")
    assert ((ce - runner_up_corner(ce)).abs().flatten(1).amax(1) > 1e-3).any()


def test_cw_margin_matches_loop():
    gen = torch.Generator().manual_seed(4)
    z = torch.randn(7, 5, generator=gen)
    labels = torch.randint(0, 5, (7,), generator=gen)
    expected = [max(z[i, j] for j in range(5) if j != labels[i]) - z[i, labels[i]] for i in range(7)]
    torch.testing.assert_close(cw_margin(z, labels), torch.stack(expected))


def test_pgd_without_start_or_steps_returns_x():
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(4, 3, 8, 8, generator=gen)
    out = pgd(
        tiny_bn_net(), x, torch.randint(0, 5, (4,), generator=gen), eps=EPS, step_size=EPS, steps=0, random_start=False
    )
    assert torch.equal(out, x)


def test_random_start_is_uniform_in_the_ball_and_seeded():
    gen = torch.Generator().manual_seed(6)
    x = torch.full((64, 3, 8, 8), 0.5) + torch.rand(64, 3, 8, 8, generator=gen) * 0.1
    labels = torch.randint(0, 5, (64,), generator=gen)
    model = tiny_bn_net().eval()
    torch.manual_seed(0)
    a = pgd(model, x, labels, eps=EPS, step_size=EPS, steps=0)
    torch.manual_seed(0)
    b = pgd(model, x, labels, eps=EPS, step_size=EPS, steps=0)
    assert torch.equal(a, b)
    delta = (a - x) / EPS
    assert delta.abs().max() <= 1 + 1e-5
    assert abs(delta.mean()) < 0.02 and abs(delta.abs().mean() - 0.5) < 0.02  # uniform(-1, 1): |.| has mean 1/2


def test_attacks_leave_parameter_grads_untouched():
    gen = torch.Generator().manual_seed(7)
    model = tiny_bn_net().eval()
    x = torch.rand(4, 3, 8, 8, generator=gen)
    labels = torch.randint(0, 5, (4,), generator=gen)
    pgd(model, x, labels, eps=EPS, step_size=EPS / 4, steps=3)
    pgd(model, x, labels, eps=EPS, step_size=EPS / 4, steps=3, loss="cw")
    trades_attack(model, x, eps=EPS, step_size=EPS / 4, steps=3)
    assert all(p.grad is None for p in model.parameters())


def test_pgd_runs_under_no_grad():
    """Evaluation code calls attacks under torch.no_grad(); they must still get input gradients."""
    gen = torch.Generator().manual_seed(8)
    model = tiny_bn_net().eval()
    x = torch.rand(4, 3, 8, 8, generator=gen)
    labels = torch.randint(0, 5, (4,), generator=gen)
    with torch.no_grad():
        x_adv = pgd(model, x, labels, eps=EPS, step_size=EPS / 4, steps=2, random_start=False)
    assert (x_adv != x).any()


def test_pgd_sample_does_not_depend_on_rest_of_batch():
    gen = torch.Generator().manual_seed(9)
    model = tiny_bn_net().eval()
    x = torch.rand(6, 3, 8, 8, generator=gen)
    labels = torch.randint(0, 5, (6,), generator=gen)
    kw = dict(eps=EPS, step_size=EPS / 4, steps=4, random_start=False)
    whole = pgd(model, x, labels, **kw)
    parts = torch.cat([pgd(model, x[:2], labels[:2], **kw), pgd(model, x[2:], labels[2:], **kw)])
    torch.testing.assert_close(whole, parts, atol=0, rtol=0)


def test_unknown_attack_loss_is_a_usage_error():
    with pytest.raises(UsageError):
        pgd(
            tiny_bn_net(),
            torch.rand(2, 3, 8, 8),
            torch.zeros(2, dtype=torch.long),
            eps=EPS,
            step_size=EPS,
            steps=1,
            loss="dlr",
        )


@pytest.mark.parametrize("steps", [0, 4])
def test_trades_attack_stays_in_ball_and_image_range(steps):
    gen = torch.Generator().manual_seed(10)
    model = tiny_bn_net().eval()
    x = images_with_edges(16, (3, 8, 8), gen)
    x_adv = trades_attack(model, x, eps=EPS, step_size=EPS / 2, steps=steps)
    assert_feasible(x_adv, x, EPS)
    assert not x_adv.requires_grad and not model.training


def test_trades_attack_ends_at_a_kl_maximising_corner_of_two_class_linear_model():
    """With 2 classes the KL grows with |(w_1 - w_0) . (x' - x)|: the ascent ends at one of the two box corners
    x +- eps * sign(w_1 - w_0) (clipped), whichever side the small random start lies on."""
    gen = torch.Generator().manual_seed(11)
    shape = (2, 6, 6)
    model = linear_model(2, shape, gen)
    x = images_with_edges(32, shape, gen)
    w = model[1].weight.detach()
    direction = torch.sign(w[1] - w[0]).view(shape)
    corners = [torch.minimum(torch.maximum((x + s * EPS * direction).clamp(0, 1), x - EPS), x + EPS) for s in (1, -1)]
    x_adv = trades_attack(model, x, eps=EPS, step_size=EPS / 4, steps=12)
    at_corner = [((x_adv - c).flatten(1).abs().amax(1) < 1e-6) for c in corners]
    assert (at_corner[0] | at_corner[1]).all()
    with torch.no_grad():
        p, q = torch.softmax(model(x).double(), 1), torch.softmax(model(x_adv).double(), 1)
        kl = (p * (p.log() - q.log())).sum(1)
    assert (kl > 0).all()


# ---- The attack's gradient path: torch.func.grad, bit for bit what torch.autograd.grad gave --------------------


def autograd_pgd(model, x, labels, *, eps, step_size, steps, loss):
    """The PGD loop as written before torch.func.grad (torch.autograd.grad on a leaf made with requires_grad_,
    ``uniform_`` for the start, the plain PGD step): the independent reference of the eager attack."""
    from fastsglr.attacks import _attack_loss, project
    from fastsglr.kernels.reference import pgd_step

    x_adv = project(x + torch.empty_like(x).uniform_(-eps, eps), x, eps)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            objective = _attack_loss(model(x_adv), labels, loss)
        (grad,) = torch.autograd.grad(objective, x_adv)
        x_adv = pgd_step(x_adv.detach(), x, grad, step_size, eps)
    return x_adv.detach()


def autograd_trades_attack(model, x, *, eps, step_size, steps):
    from fastsglr.attacks import project
    from fastsglr.kernels.reference import pgd_step

    with torch.no_grad():
        p_clean = torch.softmax(model(x).float(), dim=1)
    x_adv = project(x + 0.001 * torch.randn_like(x), x, eps)
    for _ in range(steps):
        x_adv = x_adv.detach().requires_grad_(True)
        with torch.enable_grad():
            objective = torch.nn.functional.kl_div(
                torch.log_softmax(model(x_adv).float(), dim=1), p_clean, reduction="sum"
            )
        (grad,) = torch.autograd.grad(objective, x_adv)
        x_adv = pgd_step(x_adv.detach(), x, grad, step_size, eps)
    return x_adv.detach()


@pytest.mark.parametrize("attack", ["pgd-ce", "pgd-cw", "trades"])
@pytest.mark.parametrize("bn_train", [False, True])
def test_eager_attack_is_bit_identical_to_autograd_grad(attack, bn_train):
    """Adversarial batch and BatchNorm running statistics (train mode: updated by every attack forward) equal, bit
    for bit, those of the torch.autograd.grad loop, with eps and step size given as floats or as device tensors."""
    gen = torch.Generator().manual_seed(11)
    x, y = torch.rand(6, 3, 8, 8, generator=gen), torch.randint(0, 5, (6,), generator=gen)
    eps, step = 12 / 255, 3 / 255
    results = []
    for variant in ("autograd", "float", "tensor"):
        torch.manual_seed(0)
        model = tiny_bn_net().train(bn_train)
        torch.manual_seed(3)
        if variant == "autograd":
            if attack == "trades":
                x_adv = autograd_trades_attack(model, x, eps=eps, step_size=step, steps=3)
            else:
                x_adv = autograd_pgd(model, x, y, eps=eps, step_size=step, steps=3, loss=attack[4:])
        else:
            e, s = (
                (eps, step)
                if variant == "float"
                else (torch.tensor(eps, dtype=torch.float64), torch.tensor(step, dtype=torch.float64))
            )
            if attack == "trades":
                x_adv = trades_attack(model, x, eps=e, step_size=s, steps=3)
            else:
                x_adv = pgd(model, x, y, eps=e, step_size=s, steps=3, loss=attack[4:])
        results.append((x_adv, [b.clone() for b in model.buffers()]))
    (want, want_buffers), *gots = results
    assert not torch.equal(want, x)
    for got, got_buffers in gots:
        assert torch.equal(got, want)
        assert all(torch.equal(a, b) for a, b in zip(got_buffers, want_buffers))
    assert bn_train == (results[0][1][2].item() == 3 + (attack == "trades"))  # train mode: one update per forward


# ---- Starts and extra terms: TRADES' two starts, PGD-AT + TE's objective ------------------------------------------


def test_trades_starts_gaussian_by_default_and_uniform_on_request():
    """Zero steps return the start itself: gaussian x + 0.001 N(0, 1) (std 0.001, mean 0), or uniform in the eps-ball
    (|delta| / eps uniform on [0, 1]: mean 1/2, variance 1/12), both clipped to [0, 1]. The wrong name is refused."""
    gen = torch.Generator().manual_seed(21)
    x = torch.full((64, 3, 8, 8), 0.5) + torch.rand(64, 3, 8, 8, generator=gen) * 0.1
    edges = images_with_edges(64, (3, 8, 8), gen)
    model = tiny_bn_net().eval()
    torch.manual_seed(4)
    gaussian = trades_attack(model, x, eps=EPS, step_size=EPS, steps=0) - x
    assert abs(gaussian.std().item() - 0.001) < 0.00005 and abs(gaussian.mean().item()) < 0.00005
    torch.manual_seed(4)
    uniform = (trades_attack(model, x, eps=EPS, step_size=EPS, steps=0, start="uniform") - x) / EPS
    assert uniform.abs().max() <= 1 + 1e-5
    assert abs(uniform.mean()) < 0.02 and abs(uniform.abs().mean() - 0.5) < 0.02
    assert abs(uniform.abs().var() - 1 / 12) < 0.005  # not a gaussian: its |.| variance would be 1 - 2 / pi
    for start in ("gaussian", "uniform"):
        assert_feasible(trades_attack(model, edges, eps=EPS, step_size=EPS, steps=0, start=start), edges, EPS)
    with pytest.raises(UsageError, match="unknown TRADES attack start"):
        trades_attack(model, x, eps=EPS, step_size=EPS, steps=0, start="zero")


def test_pgd_step_with_an_extra_term_follows_float64_gradient_of_ce_plus_term():
    """One PGD step from x maximising CE + extra (PGD-AT + TE's consistency term, Dong et al.'s loss.py PGD_TE)
    moves each pixel by the sign of the float64 autograd gradient of mean CE + w * mean_{batch x classes}
    (softmax - target)^2, their objective (the attack's sums are B times it: the same signs)."""
    gen = torch.Generator().manual_seed(22)
    shape, k, w = (2, 5, 5), 4, 300.0
    model = linear_model(k, shape, gen)
    x, y = torch.rand((16, *shape), generator=gen), torch.randint(0, k, (16,), generator=gen)
    target = torch.softmax(torch.randn(16, k, generator=gen), 1)

    def extra(logits):
        return w * (torch.softmax(logits.float(), 1) - target).square().mean(1).sum()

    x_adv = pgd(model, x, y, eps=EPS, step_size=EPS / 2, steps=1, random_start=False, extra=extra)
    model64 = linear_model(k, shape, gen).double()
    model64.load_state_dict({n: p.double() for n, p in model.state_dict().items()})
    x64 = x.double().requires_grad_(True)
    z = model64(x64)
    objective = nn.functional.cross_entropy(z, y) + w * ((torch.softmax(z, 1) - target.double()) ** 2).mean()
    (grad,) = torch.autograd.grad(objective, x64)
    (ce_grad,) = torch.autograd.grad(nn.functional.cross_entropy(model64(x64), y), x64)
    clear = grad.abs() > 1e-6 * grad.abs().max()
    want = (x.double() + EPS / 2 * grad.sign()).clamp(0, 1)
    torch.testing.assert_close(x_adv.double()[clear], want[clear], rtol=0, atol=1e-6)
    assert (grad.sign() != ce_grad.sign()).float().mean() > 0.1  # the term changes the step: it was not dropped
