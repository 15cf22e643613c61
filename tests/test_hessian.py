"""Hutchinson's estimator (fastsglr/hessian.py) against exact Hessians in float64, and the per-epoch probe of the
training loss (fastsglr/sharpness.py) against the exact trace of a small model's adversarial loss on its batch."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call

from fastsglr.config import Config
from fastsglr.data.datadir import read_data_dir
from fastsglr.hessian import hutchinson_trace, quadratic_forms, rademacher
from fastsglr.sharpness import HessianTraceProbe


def _rademacher_sd(h, probes):
    """Standard deviation of the mean of ``probes`` Rademacher samples of v^T H v: Var = 2 (||H||_F^2 - sum H_ii^2)."""
    off_diagonal = (h**2).sum() - (torch.diagonal(h) ** 2).sum()
    return (2 * off_diagonal / probes).sqrt().item()


def _tiny_mlp(generator):
    torch.manual_seed(int(torch.randint(0, 2**31, (), generator=generator)))
    return torch.nn.Sequential(
        torch.nn.Linear(2, 2, bias=False), torch.nn.Tanh(), torch.nn.Linear(2, 2, bias=False)
    ).double()


def _exact_hessian(model, x, y):
    """The Hessian of CE(model(x), y) w.r.t. all parameters flattened, by torch.autograd.functional.hessian."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(w):
        chunks = torch.split(w, [s.numel() for s in shapes])
        logits = functional_call(model, {n: c.view(s) for n, c, s in zip(names, chunks, shapes)}, (x,))
        return F.cross_entropy(logits, y)

    return torch.autograd.functional.hessian(loss, flat)


def test_all_sign_vectors_give_the_exact_trace():
    """The mean of v^T H v over all 2^n sign vectors is tr(H) exactly (n = 8 weights of a tiny tanh MLP, CE loss)."""
    g = torch.Generator().manual_seed(torch.seed())
    model = _tiny_mlp(g)
    x, y = torch.randn(5, 2, generator=g, dtype=torch.float64), torch.randint(0, 2, (5,), generator=g)
    h = _exact_hessian(model, x, y)
    params = list(model.parameters())
    signs = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=h.shape[0])), dtype=torch.float64)
    probes = [list(torch.split(s, [p.numel() for p in params])) for s in signs]
    probes = [[c.view(p.shape) for c, p in zip(v, params)] for v in probes]
    forms = quadratic_forms(F.cross_entropy(model(x), y), params, probes)
    assert torch.allclose(forms, torch.einsum("ki,ij,kj->k", signs, h, signs), rtol=1e-10, atol=1e-12)
    assert forms.mean().item() == pytest.approx(torch.trace(h).item(), rel=1e-10, abs=1e-12)


def test_many_probes_estimate_the_trace_within_the_variance():
    """A small conv net's CE loss: 2,000 probes land within 5 standard deviations (derived from the exact Hessian)
    of its exact trace."""
    g = torch.Generator().manual_seed(torch.seed())
    torch.manual_seed(int(torch.randint(0, 2**31, (), generator=g)))
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(8, 3)
    ).double()
    x, y = torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (6,), generator=g)
    h = _exact_hessian(model, x, y)
    probes = 2000
    samples = hutchinson_trace(F.cross_entropy(model(x), y), list(model.parameters()), probes, g)
    assert samples.shape == (probes,)
    assert abs(samples.mean().item() - torch.trace(h).item()) <= 5 * _rademacher_sd(h, probes)
    assert set(torch.unique(torch.cat([v.reshape(-1) for v in rademacher(list(model.parameters()), g)])).tolist()) == {
        -1.0,
        1.0,
    }


def test_unbiased_on_a_quadratic_with_known_trace():
    """L(w) = w^T A w / 2 has Hessian A: every sample is v^T A v exactly, and the mean of 5,000 probes lies within
    5 standard deviations of tr(A)."""
    g = torch.Generator().manual_seed(torch.seed())
    n = 12
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    a = a + a.T
    w = torch.randn(n, generator=g, dtype=torch.float64, requires_grad=True)
    probes = 5_000
    state = g.get_state()
    samples = hutchinson_trace(0.5 * w @ a @ w, [w], probes, g)
    again = torch.Generator()
    again.set_state(state)  # the same probes, drawn again
    v = torch.stack([rademacher([w], again)[0] for _ in range(probes)])
    assert torch.allclose(samples, torch.einsum("ki,ij,kj->k", v, a, v), rtol=1e-12, atol=1e-10)
    assert samples.mean().item() == pytest.approx(torch.trace(a).item(), abs=5 * _rademacher_sd(a, probes))


def test_probe_measures_the_adversarial_loss_of_its_fixed_batch(digits_dir):
    """The per-epoch probe of a linear classifier on digits (650 weights): its estimate with 3,000 probes lies within
    5 standard deviations of the exact trace of CE(f(x'), y) on its batch x' (float64 Hessian); x' lies in the
    eps-ball of the batch; a second call with the same epoch gives the same x'; the model's state is untouched."""
    torch.manual_seed(torch.seed())
    cfg = Config(batch_size=32, eps=0.1, step_size=0.03, attack_steps=3, hessian_probes=3000, seed=7)
    info = read_data_dir(digits_dir)
    probe = HessianTraceProbe(cfg, info, "cpu")
    assert probe.images.shape == (32, 1, 8, 8) and len(set(probe.labels.tolist())) > 1
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x_adv = probe.adversarial_batch(model, epoch=3)
    assert torch.equal(x_adv, probe.adversarial_batch(model, epoch=3))
    assert (x_adv - probe.images).abs().max() <= cfg.eps + 1e-6 and not torch.equal(x_adv, probe.images)
    measured = probe.measure(model, epoch=3)
    h = _exact_hessian(model.double(), x_adv.double(), probe.labels)
    model.float()
    assert abs(measured["hessian_trace"] - torch.trace(h).item()) <= 5 * _rademacher_sd(h, cfg.hessian_probes)
    assert measured["hessian_trace_sem"] == pytest.approx(_rademacher_sd(h, cfg.hessian_probes), rel=0.2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
