"""Tests of fastsglr.kernels: the Triton kernels (run by the Triton interpreter on CPU) against float64 references.

TRITON_INTERPRET must be set before fastsglr.kernels is first imported in this process (Triton reads it when
``@triton.jit`` runs): tests/conftest.py sets it on a machine without a CUDA device. If the kernels were not built
by the interpreter there, the interpreter tests fail with a message saying so (rather than silently testing the
reference against itself); on a GPU box the kernels are compiled and the interpreter tests skip.
"""

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fastsglr.kernels as K
from fastsglr.kernels import reference as R
from fastsglr.kernels import sglr_settings
from fastsglr.kernels.pgd import launch_pgd_step, launch_pgd_step_
from fastsglr.kernels.sglr import MAX_K, launch_sglr_forward, launch_soft_ce_forward

REPO = Path(__file__).resolve().parents[1]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
EPS, STEP = 8 / 255, 2 / 255
# Outputs stored in a 16-bit dtype carry its rounding on top of the fp32 math. Allowed: two ulps (an ulp is up to
# 2**-7 of the value for bf16, 2**-10 for fp16): one for the kernel's store (the interpreter rounds fp32 -> bf16
# toward zero, a whole ulp; compiled Triton rounds to nearest) and one for the upstream-gradient scaling in the
# backward pass. fp32 outputs carry only the fp32 math.
RTOL = {torch.float32: 1e-5, torch.bfloat16: 2 * 2**-7, torch.float16: 2 * 2**-10}


@pytest.fixture
def gen(request):
    """A generator seeded from the test id: fresh inputs for every parameter set, reproducible across runs."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def interpreted():
    if torch.cuda.is_available():
        pytest.skip("with a CUDA device the Triton kernels are compiled, not interpreted (tests/conftest.py)")
    if K.backend(torch.empty(0)) != "triton-interpreter":
        pytest.fail(
            "fastsglr.kernels was imported before TRITON_INTERPRET=1 was set (by another test module?): "
            "the Triton kernels would not run. Set TRITON_INTERPRET=1 in conftest.py or the environment."
        )


class PoisonAllocations(TorchDispatchMode):
    """Fill every floating-point tensor allocated inside the block with NaN, so elements a kernel fails to
    write show up as NaN instead of stale memory that may hold the right answer from an earlier run."""

    EMPTY = {
        torch.ops.aten.empty.memory_format,
        torch.ops.aten.empty_like.default,
        torch.ops.aten.empty_strided.default,
        torch.ops.aten.new_empty.default,
    }

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in self.EMPTY and out.is_floating_point():
            out.fill_(float("nan"))
        return out


def assert_close(got, expected, rtol, atol, what):
    torch.testing.assert_close(got.double(), expected.double(), rtol=rtol, atol=atol, msg=lambda m: f"{what}: {m}")


# ---- PGD step -------------------------------------------------------------------------------------------------


def pgd_inputs(shape, dtype, gen):
    """x in [0, 1] with exact 0s and 1s, x_adv in the eps-ball, grad with exact zeros (sign(0) = 0 matters)."""
    x = torch.rand(shape, generator=gen)
    x.view(-1)[::7] = 0.0
    x.view(-1)[3::7] = 1.0
    x_adv = (x + (2 * torch.rand(shape, generator=gen) - 1) * EPS).clamp(0, 1)
    grad = torch.randn(shape, generator=gen)
    grad.view(-1)[::5] = 0.0
    return x_adv.to(dtype), x.to(dtype), grad.to(dtype)


def channels_last(t):
    return t.contiguous(memory_format=torch.channels_last)


# x_adv / x / grad layouts: all contiguous, all channels-last, and mixed (inputs copied to x_adv's layout).
LAYOUTS = {
    "contiguous": lambda xa, x, g: (xa, x, g),
    "channels_last": lambda xa, x, g: (channels_last(xa), channels_last(x), channels_last(g)),
    "mixed": lambda xa, x, g: (channels_last(xa), x, channels_last(g)),
}
SCALARS = {
    "float": lambda v: v,
    "tensor_fp32": lambda v: torch.tensor(v, dtype=torch.float32),
    "tensor_fp64": lambda v: torch.tensor(v, dtype=torch.float64),
}


def expected_pgd(x_adv, x, grad):
    """The float64 reference on the same (rounded) inputs, then rounded once to the output dtype."""
    return R.pgd_step(x_adv.double(), x.double(), grad.double(), STEP, EPS)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(
    "shape,layout",
    [
        ((1, 3, 5, 7), "contiguous"),
        ((1, 3, 5, 7), "channels_last"),
        ((3, 3, 17, 19), "contiguous"),
        ((3, 3, 17, 19), "channels_last"),
        ((3, 3, 17, 19), "mixed"),
        ((4099,), "contiguous"),
        ((2, 1031), "contiguous"),
    ],
)
@pytest.mark.parametrize("scalars", list(SCALARS))
def test_pgd_step_kernel(interpreted, gen, dtype, shape, layout, scalars):
    x_adv, x, grad = LAYOUTS[layout](*pgd_inputs(shape, dtype, gen))
    with PoisonAllocations():
        out = launch_pgd_step(x_adv, x, grad, SCALARS[scalars](STEP), SCALARS[scalars](EPS))
    assert out.dtype == dtype and out.shape == x_adv.shape and out.stride() == x_adv.stride()
    ulp = {torch.float32: 1e-6, torch.bfloat16: 2**-8, torch.float16: 2**-11}[dtype]  # values lie in [0, 1]
    assert_close(out, expected_pgd(x_adv, x, grad), rtol=0, atol=ulp, what="pgd_step")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "mixed", "strided_view"])
def test_pgd_step_inplace_kernel(interpreted, gen, dtype, layout):
    x_adv, x, grad = pgd_inputs((2, 3, 9, 11), dtype, gen)
    if layout == "strided_view":  # not dense: computed into a temporary, then copied over x_adv
        x_adv = torch.full((2, 3, 9, 22), float("nan"), dtype=dtype)[..., ::2].copy_(x_adv)
    else:
        x_adv, x, grad = LAYOUTS[layout](x_adv, x, grad)
    expected = expected_pgd(x_adv, x, grad)
    strides, ptr = x_adv.stride(), x_adv.data_ptr()
    launch_pgd_step_(x_adv, x, grad, torch.tensor(STEP), EPS)
    assert x_adv.stride() == strides and x_adv.data_ptr() == ptr
    ulp = {torch.float32: 1e-6, torch.bfloat16: 2**-8, torch.float16: 2**-11}[dtype]
    assert_close(x_adv, expected, rtol=0, atol=ulp, what="pgd_step_")


def test_pgd_step_nan_and_zero_gradient(interpreted):
    """As torch.sign, sign(0) = sign(NaN) = 0 leave a pixel in place; a NaN in x_adv or x propagates."""
    x = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, float("nan")])
    x_adv = torch.tensor([0.51, 0.49, 0.5, 0.5, float("nan"), 0.5, 0.5])
    grad = torch.tensor([0.0, 0.0, 1.0, -1.0, 1.0, float("nan"), 1.0])
    out = launch_pgd_step(x_adv, x, grad, STEP, EPS)
    torch.testing.assert_close(out, R.pgd_step(x_adv, x, grad, STEP, EPS), equal_nan=True)
    assert torch.equal(out[[0, 1, 5]], x_adv[[0, 1, 5]]) and out[[4, 6]].isnan().all()


def test_pgd_step_public_op(interpreted, gen):
    """The public functions dispatch to the kernels, keep x_adv's layout, and pgd_step_ returns x_adv."""
    x_adv, x, grad = LAYOUTS["mixed"](*pgd_inputs((2, 3, 8, 8), torch.float32, gen))
    expected = expected_pgd(x_adv, x, grad)
    out = K.pgd_step(x_adv, x, grad, STEP, torch.tensor(EPS))
    assert out.stride() == x_adv.stride()
    assert_close(out, expected, rtol=0, atol=1e-6, what="pgd_step")
    assert K.pgd_step_(x_adv, x, grad, torch.tensor(STEP), EPS) is x_adv
    assert_close(x_adv, expected, rtol=0, atol=1e-6, what="pgd_step_")


# ---- Soft-target cross-entropy and SGLR -------------------------------------------------------------------------

SIZES = [(1, 2), (1, 10), (7, 10), (128, 10), (33, 100), (5, 37), (4, 1000)]


def logits(shape, dtype, gen, scale=3.0):
    return (scale * torch.randn(shape, generator=gen)).to(dtype)


def table_rows(kind, n, k, gen):
    """EMA tables as training produces them: zero-initialised (the paper), one-hot (the authors' code), or mid-run."""
    if kind == "zeros":
        return torch.zeros(n, k)
    if kind == "onehot":
        return torch.nn.functional.one_hot(torch.randint(0, k, (n,), generator=gen), k).float()
    return 0.7 * torch.softmax(2 * torch.randn(n, k, generator=gen), dim=1)  # rows that do not sum to 1


def expected_soft_ce(z, y):
    """float64 per-row losses, and the gradient of their mean from autograd of the reference."""
    z64 = z.detach().double().requires_grad_()
    R.soft_cross_entropy(z64, y.double()).backward()
    row_loss = -(y.double() * torch.log_softmax(z.double(), dim=1)).sum(dim=1)
    return row_loss, z64.grad


def check_soft_ce_outputs(row_loss, grad, z, y):
    batch = z.shape[0]
    exp_loss, exp_grad = expected_soft_ce(z, y)
    assert row_loss.dtype == torch.float32 and grad.dtype == z.dtype and grad.is_contiguous()
    assert_close(row_loss, exp_loss, rtol=1e-5, atol=1e-5, what="row losses")
    # Gradients are O(1/B); atol covers fp32 cancellation in sum(y)*softmax - y and fp16 subnormals.
    assert_close(grad, exp_grad, rtol=RTOL[z.dtype], atol=1e-6 / batch + 1e-7, what="gradient")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("batch,k", SIZES)
@pytest.mark.parametrize("target", ["soft", "unnormalised", "onehot"])
def test_soft_ce_kernel(interpreted, gen, dtype, batch, k, target):
    z = logits((batch, k), dtype, gen)
    y = table_rows({"soft": "mid", "unnormalised": "mid", "onehot": "onehot"}[target], batch, k, gen)
    if target == "soft":
        y = y / y.sum(dim=1, keepdim=True)
    with PoisonAllocations():
        row_loss, grad = launch_soft_ce_forward(z, y)
    check_soft_ce_outputs(row_loss, grad, z, y)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("batch,k", SIZES)
@pytest.mark.parametrize("init", ["zeros", "onehot", "mid"])
def test_sglr_kernel(interpreted, gen, dtype, batch, k, init):
    n = 3 * batch + 5
    z_adv, z_clean = logits((batch, k), dtype, gen), logits((batch, k), dtype, gen)
    labels = torch.randint(0, k, (batch,), generator=gen)
    index = torch.randperm(n, generator=gen)[:batch]
    table = table_rows(init, n, k, gen)
    before = table.clone()
    hyper = dict(r=0.2, temperature=1.5, alpha=0.9, lam=0.2)
    settings = sglr_settings(**hyper, device="cpu")
    with PoisonAllocations():
        row_loss, grad = launch_sglr_forward(z_adv, z_clean, labels, index, table, settings)

    y, rows = R.sglr_target(z_adv.double(), z_clean.double(), labels, before[index].double(), **hyper)
    for i, row in enumerate(index.tolist()):  # each updated row, by name, so a failure says which
        assert_close(table[row], rows[i], rtol=1e-5, atol=1e-6, what=f"table row {row} (sample {i})")
    untouched = torch.ones(n, dtype=torch.bool)
    untouched[index] = False
    assert torch.equal(table[untouched], before[untouched]), "rows outside the batch changed"
    check_soft_ce_outputs(row_loss, grad, z_adv, y)


def test_sglr_kernel_strided_inputs(interpreted, gen):
    """Non-contiguous logits (a column slice), int32 indices and a table view with a row stride != K."""
    batch, k, n = 6, 10, 20
    z_adv = logits((batch, 2 * k), torch.float32, gen)[:, ::2]
    z_clean = logits((batch, k + 3), torch.float32, gen)[:, :k]
    labels = torch.randint(0, k, (batch,), generator=gen)
    index = torch.randperm(n, generator=gen)[:batch].int()
    storage = torch.rand(n, k + 4, generator=gen)
    table = storage[:, 2 : k + 2]
    before = storage.clone()
    hyper = dict(r=0.6, temperature=1.0, alpha=0.5, lam=0.5)
    row_loss, grad = launch_sglr_forward(z_adv, z_clean, labels, index, table, sglr_settings(**hyper, device="cpu"))
    old_rows = before[:, 2 : k + 2][index.long()].double()
    y, rows = R.sglr_target(z_adv.double(), z_clean.double(), labels, old_rows, **hyper)
    assert_close(table[index.long()], rows, rtol=1e-5, atol=1e-6, what="table rows")
    assert torch.equal(storage[:, :2], before[:, :2]) and torch.equal(storage[:, k + 2 :], before[:, k + 2 :])
    check_soft_ce_outputs(row_loss, grad, z_adv, y)


def test_sglr_kernel_large_logits(interpreted, gen):
    """Logits of magnitude ~100: the max-subtracted softmax and log-sum-exp must stay finite and exact."""
    z_adv, z_clean = (logits((3, 1000), torch.float32, gen, scale=60.0) for _ in range(2))
    labels, index, table = torch.tensor([0, 999, 5]), torch.tensor([2, 0, 1]), torch.zeros(3, 1000)
    row_loss, grad = launch_sglr_forward(z_adv, z_clean, labels, index, table, sglr_settings(0.2, 1.5, 0.9, 0.2, "cpu"))
    y, _ = R.sglr_target(
        z_adv.double(), z_clean.double(), labels, torch.zeros(3, 1000, dtype=torch.float64), 0.2, 1.5, 0.9, 0.2
    )
    check_soft_ce_outputs(row_loss, grad, z_adv, y)


def test_kernel_argument_checks():
    z = torch.zeros(2, MAX_K + 1)
    with pytest.raises(ValueError, match="classes"):
        launch_soft_ce_forward(z, z)
    with pytest.raises(TypeError, match="float32, bfloat16 or float16"):
        launch_soft_ce_forward(torch.zeros(2, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="shapes differ"):
        launch_pgd_step(torch.zeros(3), torch.zeros(3), torch.zeros(4), STEP, EPS)


# ---- Gradients ------------------------------------------------------------------------------------------------


def test_gradcheck_reference(gen):
    """The definitions' gradients, float64: gradcheck of the soft-target CE (targets summing to 1 or not, and an
    SGLR target), and sglr_loss's gradient is that CE's at its target held constant (the target is detached)."""
    batch, k = 3, 5
    z = torch.randn(batch, k, dtype=torch.float64, generator=gen, requires_grad=True)
    z_clean = torch.randn(batch, k, dtype=torch.float64, generator=gen)
    labels, index = torch.tensor([0, 4, 2]), torch.tensor([5, 1, 3])
    table = torch.rand(6, k, dtype=torch.float64, generator=gen)
    y, _ = R.sglr_target(z, z_clean, labels, table[index], 0.2, 1.5, 0.9, 0.2)
    for target in (
        torch.softmax(torch.randn(batch, k, dtype=torch.float64, generator=gen), dim=1),
        torch.rand(batch, k, dtype=torch.float64, generator=gen),
        y,
    ):
        assert torch.autograd.gradcheck(lambda t: R.soft_cross_entropy(t, target), (z,))
    (grad_sglr,) = torch.autograd.grad(R.sglr_loss(z, z_clean, labels, index, table, 0.2, 1.5, 0.9, 0.2), z)
    (grad_ce,) = torch.autograd.grad(R.soft_cross_entropy(z, y), z)
    torch.testing.assert_close(grad_sglr, grad_ce)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("batch,k", [(1, 10), (9, 100), (3, 1000)])
def test_fused_backward_matches_autograd(interpreted, gen, dtype, batch, k):
    """The public losses: value and gradient (saved in the forward pass, scaled by the upstream gradient)
    against autograd of the float64 reference; no gradient reaches the clean logits or the target."""
    n = batch + 4
    z_adv = logits((batch, k), dtype, gen).requires_grad_()
    z_clean = logits((batch, k), dtype, gen).requires_grad_()
    labels, index = torch.randint(0, k, (batch,), generator=gen), torch.randperm(n, generator=gen)[:batch]
    table = table_rows("zeros", n, k, gen)
    table_ref = table.double()
    hyper = (0.2, 1.5, 0.9, 0.2)
    scale = 3.0  # a non-unit upstream gradient

    loss = K.sglr_loss(z_adv, z_clean, labels, index, table, *hyper)
    (scale * loss).backward()
    z64 = z_adv.detach().double().requires_grad_()
    ref = R.sglr_loss(z64, z_clean.detach().double(), labels, index, table_ref, *hyper)
    (scale * ref).backward()
    assert loss.dtype == torch.float32
    assert_close(loss, ref, rtol=1e-5, atol=1e-6, what="sglr_loss")
    assert_close(z_adv.grad, z64.grad, rtol=RTOL[dtype], atol=scale * 1e-6 / batch + 1e-7, what="sglr_loss grad")
    assert z_clean.grad is None
    assert_close(table, table_ref, rtol=1e-5, atol=1e-6, what="table")

    z_adv.grad = None
    target = torch.rand(batch, k, generator=gen).requires_grad_()
    loss = K.soft_cross_entropy(z_adv, target)
    (scale * loss).backward()
    z64.grad = None
    ref = R.soft_cross_entropy(z64, target.detach().double())
    (scale * ref).backward()
    assert_close(loss, ref, rtol=1e-5, atol=1e-6, what="soft_cross_entropy")
    assert_close(z_adv.grad, z64.grad, rtol=RTOL[dtype], atol=scale * 1e-6 / batch + 1e-7, what="soft_ce grad")
    assert target.grad is None


def test_fused_forward_reference_matches_autograd(gen):
    """reference.soft_cross_entropy_forward's closed-form gradient is autograd's, in float64."""
    z = torch.randn(4, 7, dtype=torch.float64, generator=gen, requires_grad=True)
    y = torch.rand(4, 7, dtype=torch.float64, generator=gen)
    row_loss, grad = R.soft_cross_entropy_forward(z, y)
    R.soft_cross_entropy(z, y).backward()
    torch.testing.assert_close(row_loss.mean(), R.soft_cross_entropy(z, y))
    torch.testing.assert_close(grad, z.grad)


# ---- torch.library integration ----------------------------------------------------------------------------------


def op_samples(gen):
    batch, k, n = 3, 10, 8
    z = torch.randn(batch, k, generator=gen)
    x_adv, x, grad = LAYOUTS["mixed"](*pgd_inputs((2, 3, 4, 5), torch.float32, gen))
    labels, index = torch.randint(0, k, (batch,), generator=gen), torch.randperm(n, generator=gen)[:batch]
    row_loss, saved_grad = R.soft_cross_entropy_forward(z, torch.rand(batch, k, generator=gen))
    ops = torch.ops.fastsglr
    return {
        "pgd_step": (ops.pgd_step.default, (x_adv, x, grad, STEP, EPS, None, None)),
        "pgd_step_tensors": (ops.pgd_step.default, (x_adv, x, grad, 0.0, 0.0, torch.tensor(STEP), torch.tensor(EPS))),
        "pgd_step_inplace": (
            ops.pgd_step_inplace.default,
            (x_adv.clone(), x, grad, STEP, 0.0, None, torch.tensor(EPS)),
        ),
        "soft_ce_forward": (ops.soft_ce_forward.default, (z, torch.rand(batch, k, generator=gen))),
        "sglr_forward": (
            ops.sglr_forward.default,
            (
                z,
                torch.randn(batch, k, generator=gen),
                labels,
                index,
                torch.zeros(n, k),
                sglr_settings(0.2, 1.5, 0.9, 0.2, "cpu"),
            ),
        ),
        "mean_with_saved_grad": (ops.mean_with_saved_grad.default, (z.clone().requires_grad_(), row_loss, saved_grad)),
    }


@pytest.mark.parametrize(
    "name",
    ["pgd_step", "pgd_step_tensors", "pgd_step_inplace", "soft_ce_forward", "sglr_forward", "mean_with_saved_grad"],
)
def test_opcheck(gen, name):
    op, args = op_samples(gen)[name]
    torch.library.opcheck(op, args)


def test_float64_runs_the_reference(interpreted, gen):
    """The kernels take fp32/bf16/fp16; float64 calls run the definitions themselves, on any backend."""
    assert K.backend(torch.empty(0, dtype=torch.float64)) == "reference"
    z = torch.randn(4, 10, dtype=torch.float64, generator=gen, requires_grad=True)
    z_clean = torch.randn(4, 10, dtype=torch.float64, generator=gen)
    labels, index = torch.tensor([1, 2, 3, 4]), torch.tensor([0, 5, 3, 1])
    table, table_ref = torch.zeros(6, 10, dtype=torch.float64), torch.zeros(6, 10, dtype=torch.float64)
    loss = K.sglr_loss(z, z_clean, labels, index, table, 0.2, 1.5, 0.9, 0.2)
    torch.testing.assert_close(loss, R.sglr_loss(z, z_clean, labels, index, table_ref, 0.2, 1.5, 0.9, 0.2))
    torch.testing.assert_close(table, table_ref)
    x_adv, x, grad = pgd_inputs((2, 7), torch.float64, gen)
    torch.testing.assert_close(K.pgd_step(x_adv, x, grad, STEP, EPS), R.pgd_step(x_adv, x, grad, STEP, EPS))


def test_compile_fullgraph_cpu(gen):
    """A PGD step and both losses under torch.compile(fullgraph=True): no graph break, same values, gradients
    and table update as eager (on CPU the compiled graph runs the reference; eager may run the interpreter)."""
    batch, k, n = 4, 10, 12
    z_adv = torch.randn(batch, k, generator=gen, requires_grad=True)
    z_clean = torch.randn(batch, k, generator=gen)
    labels, index = torch.randint(0, k, (batch,), generator=gen), torch.randperm(n, generator=gen)[:batch]
    x_adv, x, grad = LAYOUTS["channels_last"](*pgd_inputs((2, 3, 8, 8), torch.float32, gen))
    step, eps = torch.tensor(STEP), torch.tensor(EPS)

    def train_step(z_adv, table, x_adv):
        loss = K.sglr_loss(z_adv, z_clean, labels, index, table, 0.2, 1.5, 0.9, 0.2)
        loss = loss + 0.5 * K.soft_cross_entropy(z_adv, torch.softmax(z_clean, dim=1))
        K.pgd_step_(x_adv, x, grad, step, eps)
        return loss, K.pgd_step(x_adv, x, grad, STEP, EPS)

    torch._dynamo.reset()
    compiled = torch.compile(train_step, fullgraph=True)
    results = {}
    for name, fn in (("eager", train_step), ("compiled", compiled)):
        z, table, xa = z_adv.detach().clone().requires_grad_(), torch.zeros(n, k), x_adv.clone()
        loss, out = fn(z, table, xa)
        loss.backward()
        results[name] = (loss, out, xa, table, z.grad)
    for what, e, c in zip(("loss", "pgd_step", "pgd_step_", "table", "grad"), results["eager"], results["compiled"]):
        torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-6, msg=lambda m: f"{what}: {m}")
    assert results["compiled"][1].stride() == x_adv.stride()


def test_backend_selection(interpreted):
    """In this process the kernels were built by the interpreter. In a fresh one without TRITON_INTERPRET, CPU
    calls use the reference, and setting the variable after the import changes nothing (Triton read it at import)."""
    assert K.backend(torch.empty(0)) == "triton-interpreter"
    assert K.backend(torch.empty(0, device="meta")) == "reference"
    script = (
        "import os, torch, fastsglr.kernels as K; before = K.backend(torch.empty(0)); "
        "os.environ['TRITON_INTERPRET'] = '1'; print(before, K.backend(torch.empty(0)))"
    )
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["reference", "reference"]


def test_bench_quick_cpu(tmp_path):
    """bench/kernels.py on a CPU: a correctness-only pass (no timings), with JSON results."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "kernels.py"), "--quick", "--device", "cpu", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["mode"] == "correctness-only" and result["timings"] == []
    assert result["checks"] and all(check["ok"] for check in result["checks"]), result["checks"]
