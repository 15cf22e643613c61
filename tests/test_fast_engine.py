"""The fast engine against the reference engine: same iterations, same numbers, no host syncs.

On a CPU the fast engine runs the iteration compiled (fullgraph, fp32) and must match the reference to float32
rounding: losses, metric sums, the SGLR table, weights, BatchNorm statistics and momentum buffers. On a GPU
(``pytest -m gpu``, run by bench/gpu_suite.sh) it runs bf16 + channels-last + the captured CUDA graph, and is
compared with loose tolerances, since bf16 moves PGD's sign steps.
"""

import dataclasses

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from fastsglr.config import Config
from fastsglr.data.loaders import Batch
from fastsglr.engine import build_engine
from fastsglr.engine.fast import WARMUP_STEPS, CompiledWhole, DeviceLossScale, FastEngine, FastOptions, SGDUpdate
from fastsglr.engine.reference import ReferenceEngine
from fastsglr.evaluation import evaluate
from fastsglr.labels import build_label_strategy
from fastsglr.metrics import TrainMeter
from fastsglr.models import build_model
from fastsglr.optim import build_optimizer

N, K, B, SIZE = 96, 10, 16, 8
CFG = Config(
    model="smallcnn",
    eps=16 / 255,
    step_size=4 / 255,
    attack_steps=2,
    batch_size=B,
    labels="sglr",
    sglr_warmup=0,
    eval_steps=2,
)
LRS = (0.1, 0.05, 0.02)  # a changing learning rate: the compiled step reads it from a device tensor


def make_data(device, steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    train_labels = torch.randint(0, K, (N,), generator=gen)
    clean_labels = torch.where(
        torch.rand(N, generator=gen) < 0.2, torch.randint(0, K, (N,), generator=gen), train_labels
    )  # some "corrupted" samples, so every metric column is exercised
    batches = []
    for _ in range(steps):
        index = torch.randperm(N, generator=gen)[:B]
        images = torch.rand(B, 1, SIZE, SIZE, generator=gen).contiguous(memory_format=torch.channels_last)
        batches.append(Batch(*(t.to(device) for t in (images, train_labels[index], clean_labels[index], index))))
    return train_labels.to(device), batches


def make_run(device, cfg=CFG, options=None, engine="reference"):
    """Model, strategy, optimizer and engine, initialised identically for every engine."""
    train_labels, _ = make_data(device, 0)
    torch.manual_seed(0)
    model = build_model(cfg.model, K, 1, SIZE).to(device)
    strategy = build_label_strategy(cfg, train_labels, K).to(device)
    optimizer = build_optimizer(model.parameters(), cfg)
    if engine == "reference":
        return model, strategy, optimizer, ReferenceEngine(model, optimizer, strategy, cfg)
    return model, strategy, optimizer, FastEngine(model, optimizer, strategy, cfg, options)


def train(run, batches, epochs=1, seed=1):
    """``epochs`` passes over ``batches`` with the trainer's protocol (lr set on the param groups, a new meter per
    epoch); returns the losses and the last meter."""
    model, strategy, optimizer, engine = run
    torch.manual_seed(seed)
    losses = []
    for epoch in range(epochs):
        strategy.start_epoch(epoch)
        meter = TrainMeter(batches[0].images.device)
        model.train()
        for step, batch in enumerate(batches):
            for group in optimizer.param_groups:
                group["lr"] = LRS[step % len(LRS)]
            losses.append(engine.step(batch, meter, step).float().clone())
    return torch.stack(losses), meter


def state(run):
    """Everything an iteration advances: weights, BN statistics, the SGLR table, momentum buffers."""
    model, strategy, optimizer, _ = run
    out = {f"model.{k}": v for k, v in model.state_dict().items()}
    out["table"] = strategy.table
    out.update({f"momentum.{i}": optimizer.state[p]["momentum_buffer"] for i, p in enumerate(model.parameters())})
    return out


def assert_same_training(ref, fast, ref_out, fast_out, rtol, atol):
    (ref_losses, ref_meter), (fast_losses, fast_meter) = ref_out, fast_out
    torch.testing.assert_close(fast_losses, ref_losses, rtol=rtol, atol=atol)
    torch.testing.assert_close(fast_meter.sums, ref_meter.sums, rtol=rtol, atol=atol)
    assert int(fast_meter.first_bad_step) == int(ref_meter.first_bad_step)
    ref_state, fast_state = state(ref), state(fast)
    for key in ref_state:
        torch.testing.assert_close(
            fast_state[key].float(), ref_state[key].float(), rtol=rtol, atol=atol, msg=lambda m: f"{key}: {m}"
        )


class NoHostSync(TorchDispatchMode):
    """Fails on any op that makes the host wait for the device: reading a value (item, nonzero, equal...) or copying
    from a device to host memory."""

    SYNCING = {
        torch.ops.aten._local_scalar_dense.default,
        torch.ops.aten.item.default,
        torch.ops.aten.nonzero.default,
        torch.ops.aten.is_nonzero.default,
        torch.ops.aten.equal.default,
        torch.ops.aten.allclose.default,
        torch.ops.aten.masked_select.default,
        torch.ops.aten._unique2.default,
        torch.ops.aten.unique_consecutive.default,
    }

    def __init__(self):
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in self.SYNCING:
            raise AssertionError(f"host sync inside the iteration: {func}")
        out = func(*args, **(kwargs or {}))
        inputs = [t for t in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        outputs = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        if any(t.device.type == "cpu" for t in outputs) and any(t.device.type != "cpu" for t in inputs):
            raise AssertionError(f"device-to-host copy inside the iteration: {func}")
        self.ops += 1
        return out


# ---- CPU: the compiled iteration ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compiled_and_reference():
    """Two epochs of three steps each, reference engine and compiled fast engine, from the same seed; and how many
    graphs the fast engine compiled."""
    from torch._dynamo.utils import counters

    _, batches = make_data("cpu", 3)
    ref, fast = make_run("cpu"), make_run("cpu", options=FastOptions(compile=True), engine="fast")
    ref_out = train(ref, batches, epochs=2)
    graphs = counters["stats"]["unique_graphs"]
    fast_out = train(fast, batches, epochs=2)
    return ref, fast, batches, ref_out, fast_out, counters["stats"]["unique_graphs"] - graphs


def test_compiled_fast_engine_matches_reference(compiled_and_reference):
    ref, fast, _, ref_out, fast_out, graphs = compiled_and_reference
    assert_same_training(ref, fast, ref_out, fast_out, rtol=1e-5, atol=1e-5)
    assert float(fast_out[1].sums[-1]) == 3  # the second epoch's meter restarted from zero
    assert graphs == 1  # one compilation for every step: a new learning rate or meter recompiles nothing


def test_iteration_compiles_whole_and_makes_no_host_sync(compiled_and_reference):
    """The compiled iteration is one graph: fullgraph=True refuses a graph break, and Dynamo breaks the graph at any
    .item(), nonzero or branch on a tensor's value. torch.compile does not run under a user dispatch mode, so the
    same iteration runs eagerly under one that fails on any syncing op (on a GPU, CUDA's sync debug mode checks the
    compiled and the captured iteration too: test_compiled_and_captured_iterations_make_no_host_sync)."""
    from torch._dynamo.utils import counters

    fast = compiled_and_reference[1]
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert fast[3].train_fn.fullgraph  # the one-graph compile held: no fallback to graph breaks
    eager = make_run("cpu", options=FastOptions(compile=False), engine="fast")
    _, batches = make_data("cpu", 1)
    with NoHostSync() as mode:
        eager[3].step(batches[0], TrainMeter("cpu"), 0)
    assert mode.ops > 100  # the mode saw the whole iteration


def test_compiled_whole_falls_back_to_graph_breaks_with_a_warning():
    """What an older torch that cannot trace the iteration whole gets: a warning, then the same result."""

    def iteration(x):
        y = x.sin()
        torch._dynamo.graph_break()  # stands in for an op an older Dynamo cannot put in the graph
        return y.cos()

    x = torch.randn(5)
    compiled = CompiledWhole(iteration)
    with pytest.warns(UserWarning, match="cannot compile iteration as one graph"):
        out = compiled(x)
    assert not compiled.fullgraph
    torch.testing.assert_close(out, x.sin().cos())
    torch.testing.assert_close(compiled(x), x.sin().cos())  # no second warning: the broken compile is kept


# Twelve configurations of two structures: only numbers change within a structure (the numbers of issue 11: r, T,
# alpha, lam, TE's momentum and weight, eps, step size, TRADES' beta).
CONFIGS = [
    dict(method="pgd-at", labels="sglr", r=r, temperature=t, ema_momentum=a, lam=lam, eps=e, step_size=s)
    for r, t, a, lam, e, s in (
        (0.0, 1.0, 0.9, 0.2, 16 / 255, 4 / 255),
        (0.2, 1.5, 0.9, 0.2, 16 / 255, 4 / 255),
        (0.4, 2.0, 0.8, 0.5, 8 / 255, 2 / 255),
        (0.6, 1.0, 0.5, 0.0, 16 / 255, 8 / 255),
        (0.8, 1.5, 0.95, 1.0, 24 / 255, 4 / 255),
        (1.0, 2.0, 0.9, 0.2, 4 / 255, 1 / 255),
        (0.2, 0.5, 0.7, 0.3, 16 / 255, 3 / 255),
        (0.3, 3.0, 0.0, 0.7, 12 / 255, 6 / 255),
    )
]
CONFIGS += [
    dict(
        method="trades",
        labels="te",
        trades_beta=beta,
        ema_momentum=m,
        te_weight=w,
        eps=e,
        step_size=s,
        te_start=0.0,
        te_end=0.0,
    )  # full weight from the first epoch: the weight takes effect
    for beta, m, w, e, s in (
        (6.0, 0.9, 300.0, 16 / 255, 4 / 255),
        (1.0, 0.7, 30.0, 8 / 255, 2 / 255),
        (3.0, 0.99, 3000.0, 20 / 255, 5 / 255),
        (12.0, 0.5, 3.0, 4 / 255, 1 / 255),
    )
]


def test_compiled_pgd_at_te_is_one_graph_across_its_frozen_and_active_epochs():
    """PGD-AT + TE (the attack maximises CE + w * consistency) over a frozen epoch (w 0, table untouched) and an
    active one (w 300): one compiled graph for both, matching the reference engine's losses, weights and table."""
    from torch._dynamo.utils import counters

    cfg = dataclasses.replace(CFG, labels="te", epochs=4, te_start=0.5, te_end=0.5)  # authors' epochs 1 | 2, 3, 4
    _, batches = make_data("cpu", 2, seed=9)
    ref, fast = make_run("cpu", cfg), make_run("cpu", cfg, FastOptions(compile=True), engine="fast")
    torch._dynamo.reset()
    counters.clear()
    frozen = make_run("cpu", cfg)
    train(frozen, batches, epochs=1)
    assert frozen[1].ensemble.abs().sum() == 0 and float(frozen[1].consistency_weight) == 0.0
    ref_out, fast_out = train(ref, batches, epochs=2), train(fast, batches, epochs=2)
    assert ref[1].ensemble.abs().sum() > 0 and float(ref[1].consistency_weight) == 300.0
    torch.testing.assert_close(fast_out[0], ref_out[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast[1].ensemble, ref[1].ensemble, rtol=1e-5, atol=1e-6)
    for (name, want), got in zip(ref[0].state_dict().items(), fast[0].state_dict().values()):
        torch.testing.assert_close(
            got.float(), want.float(), rtol=1e-4, atol=1e-5, msg=lambda m, name=name: f"{name}: {m}"
        )
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    assert fast[3].train_fn.fullgraph


def test_many_configurations_in_one_process_compile_once_per_structure():
    """What `fastsglr reproduce` does: twelve configurations through the compiled fast engine in one process. The
    numbers reach the graph as device tensors, so each structure compiles once (two graphs: far below Dynamo's
    recompile limit) and every configuration still computes its own numbers: each
    matches a reference run of that configuration."""
    from torch._dynamo.utils import counters

    assert len({tuple(sorted(c.items())) for c in CONFIGS}) == len(CONFIGS) >= 12
    _, batches = make_data("cpu", 2, seed=5)
    torch._dynamo.reset()
    counters.clear()
    losses = []
    for overrides in CONFIGS:
        cfg = dataclasses.replace(CFG, **overrides)
        ref_losses, _ = train(make_run("cpu", cfg), batches)
        fast_losses, _ = train(make_run("cpu", cfg, FastOptions(compile=True), engine="fast"), batches)
        # rtol 1e-4: TRADES + TE (weight up to 300) carries the compiled rounding of step 1 into step 2's loss.
        torch.testing.assert_close(fast_losses, ref_losses, rtol=1e-4, atol=1e-5, msg=lambda m: f"{overrides}: {m}")
        losses.append(fast_losses)
    assert counters["stats"]["unique_graphs"] == 2  # one compile per structure, none per configuration
    assert len({tuple(loss.tolist()) for loss in losses}) == len(CONFIGS)  # the numbers took effect


def test_compiled_whole_runs_eagerly_past_the_recompile_limit():
    """More structurally different calls than Dynamo's recompile limit: a warning, then eager results, never
    FailOnRecompileLimitHit."""

    def scale(x, k):
        return x * k  # an int argument: each new value is a new graph under dynamic=False

    x, compiled = torch.randn(5), CompiledWhole(scale)
    with torch._dynamo.config.patch(recompile_limit=2):
        torch.testing.assert_close(compiled(x, 1), x)
        torch.testing.assert_close(compiled(x, 2), 2 * x)
        with pytest.warns(UserWarning, match="recompile limit"):
            torch.testing.assert_close(compiled(x, 3), 3 * x)
        torch.testing.assert_close(compiled(x, 4), 4 * x)


def record_compiled_aten_ops(monkeypatch) -> list:
    """Every torch.compile in the test compiles with fullgraph=True through AOTAutograd, recording into the returned
    list the target of each ATen op of the forward and backward graphs it builds."""
    from torch._dynamo.backends.common import aot_autograd

    targets = []

    def record(graph_module, example_inputs):
        targets.extend(node.target for node in graph_module.graph.nodes if node.op == "call_function")
        return graph_module  # run the ATen graph as it is: what it holds is the point, not its speed

    real_compile = torch.compile
    monkeypatch.setattr(
        torch,
        "compile",
        lambda fn, **kwargs: real_compile(
            fn, fullgraph=True, dynamic=False, backend=aot_autograd(fw_compiler=record, bw_compiler=record)
        ),
    )
    return targets


def test_compiled_iteration_graph_holds_no_syncing_op(monkeypatch):
    """The graph torch.compile builds for the whole iteration (forward, the attack's input gradients, backward, SGD,
    metrics, all as ATen ops after AOTAutograd), scanned op by op for anything that syncs with the host. This checks
    the compiled iteration itself, where NoHostSync above can only check its eager twin."""
    targets = record_compiled_aten_ops(monkeypatch)
    run = make_run("cpu", options=FastOptions(compile=True), engine="fast")
    _, batches = make_data("cpu", 1)
    run[3].step(batches[0], TrainMeter("cpu"), 0)
    assert len(targets) > 100  # the whole iteration went through the backend
    assert torch.ops.aten.convolution_backward.default in targets  # the weight gradients are in this graph
    assert not [t for t in targets if t in NoHostSync.SYNCING]


def test_fast_evaluation_matches_reference_evaluation():
    """evaluate() with a full batch through the compiled step and a last partial batch eagerly: same numbers as
    evaluation.evaluate, which runs the same eval_step eagerly."""
    _, batches = make_data("cpu", 3, seed=3)
    loader = batches[:2] + [Batch(*(t[: B // 2] for t in batches[2]))]
    model, _, _, engine = make_run("cpu", options=FastOptions(compile=True), engine="fast")
    attack = dict(eps=CFG.eps, step_size=CFG.resolved_eval_step_size, steps=CFG.eval_steps)
    torch.manual_seed(7)
    fast = engine.evaluate(loader, **attack)
    torch.manual_seed(7)
    ref = evaluate(model, loader, device="cpu", **attack)
    assert fast == pytest.approx(ref, rel=1e-6)
    assert sum(fast.values()) > 0


# ---- CPU: the eager pieces ---------------------------------------------------------------------------------------


def test_eager_fast_engine_matches_reference_with_either_op_set():
    """Uncompiled, the fast engine is the reference run through SGDUpdate: identical numbers, fused ops or not."""
    _, batches = make_data("cpu", 3)
    ref = make_run("cpu")
    ref_out = train(ref, batches)
    for fused in (True, False):
        fast = make_run("cpu", options=FastOptions(compile=False, fused=fused), engine="fast")
        assert_same_training(ref, fast, ref_out, train(fast, batches), rtol=1e-5, atol=1e-6)


class OpsCalled(TorchDispatchMode):
    """Records the overload packet of every op that reaches dispatch."""

    def __init__(self):
        super().__init__()
        self.called = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.called.add(func.overloadpacket)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("method", ["pgd-at", "trades"])
def test_reference_engine_never_calls_a_fused_op_and_the_fused_engine_does(method):
    """The op set is the engine's, on every device: ReferenceEngine runs the plain definitions (no op of the
    fastsglr torch.library namespace reaches dispatch), a fast engine built with fused ops calls them."""
    fused_ops = {getattr(torch.ops.fastsglr, name) for name in torch.ops.fastsglr}
    assert {torch.ops.fastsglr.pgd_step, torch.ops.fastsglr.sglr_forward} <= fused_ops
    cfg = dataclasses.replace(CFG, method=method)
    _, batches = make_data("cpu", 1)
    called = {}
    for name, options in (
        ("reference", None),
        ("fused", FastOptions(compile=False, fused=True)),
        ("plain", FastOptions(compile=False, fused=False)),
    ):
        run = make_run("cpu", cfg, options, engine="reference" if options is None else "fast")
        with OpsCalled() as mode:
            run[3].step(batches[0], TrainMeter("cpu"), 0)
        called[name] = mode.called & fused_ops
    assert called["reference"] == called["plain"] == set()
    expected = {torch.ops.fastsglr.pgd_step, torch.ops.fastsglr.mean_with_saved_grad}
    expected.add(torch.ops.fastsglr.sglr_forward if method == "pgd-at" else torch.ops.fastsglr.soft_ce_forward)
    assert called["fused"] == expected


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_eager_stays_close_to_fp32(precision):
    _, batches = make_data("cpu", 3)
    ref = make_run("cpu")
    ref_losses, _ = train(ref, batches)
    fast = make_run("cpu", options=FastOptions(precision=precision, compile=False), engine="fast")
    losses, meter = train(fast, batches)
    torch.testing.assert_close(losses, ref_losses, rtol=0.1, atol=0.05)
    assert float(meter.sums[1]) == 3 * B


def test_loss_scale_skips_the_update_on_overflow_and_backs_off():
    """fp16's device-side loss scale: an inf gradient leaves the weights untouched and halves the scale; a finite
    one is unscaled and applied."""
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([param], lr=0.5, momentum=0.9)
    update, scaler = SGDUpdate(optimizer, "cpu"), DeviceLossScale("cpu", init_scale=4.0)
    update.prepare()
    for grad, expected_param, expected_scale in ((float("inf"), 1.0, 2.0), (1.0, 0.5, 2.0)):
        update.zero_grad()
        scaler.scale((param * grad).sum()).backward()
        scaler.unscale_(update)
        scaler.step(update)
        scaler.update()
        assert torch.equal(param.detach(), torch.full((3,), expected_param)), (grad, param)
        assert float(scaler.scale_factor) == expected_scale


def test_build_engine_names_the_fast_engine():
    model, strategy, optimizer, _ = make_run("cpu")
    engine = build_engine(model, optimizer, strategy, dataclasses.replace(CFG, engine="fast"))
    assert engine.name == "fast" and engine.options == FastOptions(precision="fp32", compile=True)


# ---- GPU: bf16, channels-last, CUDA graph ------------------------------------------------------------------------

GPU_STEPS = WARMUP_STEPS + 4  # warm-up, capture, replays


@pytest.mark.gpu
def test_cuda_graph_engine_tracks_reference_in_bf16():
    _, batches = make_data("cuda", GPU_STEPS)
    ref = make_run("cuda")
    fast = make_run("cuda", options=FastOptions.for_device("cuda", "bf16"), engine="fast")
    ref_losses, ref_meter = train(ref, batches)
    losses, meter = train(fast, batches)
    torch.testing.assert_close(losses, ref_losses, rtol=0.05, atol=0.05)
    assert float(meter.sums[1]) == float(ref_meter.sums[1]) == GPU_STEPS * B
    ref_state, fast_state = state(ref), state(fast)
    torch.testing.assert_close(fast_state["table"], ref_state["table"], rtol=0, atol=0.03)
    for key in ref_state:
        if key.startswith("model.") and ref_state[key].is_floating_point():
            torch.testing.assert_close(
                fast_state[key].float(), ref_state[key].float(), rtol=0.05, atol=0.02, msg=lambda m: f"{key}: {m}"
            )


@pytest.mark.gpu
def test_capture_then_replays_advance_the_state():
    """After the warm-up one graph is captured; each replay moves the table, the weights and the step counter, and
    SGLR's end of warm-up captures a second graph."""
    cfg = dataclasses.replace(CFG, sglr_warmup=1)
    _, batches = make_data("cuda", GPU_STEPS)
    model, strategy, optimizer, engine = run = make_run("cuda", cfg, FastOptions.for_device("cuda", "bf16"), "fast")
    train(run, batches[: WARMUP_STEPS + 1])
    assert list(engine.graphs) == [("train", False)]
    strategy.start_epoch(1)
    meter = TrainMeter("cuda")
    for step, batch in enumerate(batches):
        table, weight = strategy.table.clone(), next(model.parameters()).detach().clone()
        engine.step(batch, meter, step)
        assert not torch.equal(strategy.table, table) and not torch.equal(next(model.parameters()), weight)
    assert set(engine.graphs) == {("train", False), ("train", True)}
    assert float(meter.sums[-1]) == GPU_STEPS and float(meter.sums[1]) == GPU_STEPS * B


@pytest.mark.gpu
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_compiled_and_captured_iterations_make_no_host_sync(cuda_graph):
    """After the warm-up (compilation, capture), iterations run under CUDA's sync debug mode set to fail."""
    _, batches = make_data("cuda", GPU_STEPS)
    options = dataclasses.replace(FastOptions.for_device("cuda", "bf16"), cuda_graph=cuda_graph)
    run = make_run("cuda", options=options, engine="fast")
    train(run, batches[: WARMUP_STEPS + 1])
    meter = TrainMeter("cuda")
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step, batch in enumerate(batches):
            run[3].step(batch, meter, step)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert float(meter.sums[-1]) == GPU_STEPS


@pytest.mark.gpu
def test_captured_evaluation_tracks_reference():
    _, batches = make_data("cuda", GPU_STEPS, seed=3)
    model, _, _, engine = make_run("cuda", options=FastOptions.for_device("cuda", "bf16"), engine="fast")
    attack = dict(eps=CFG.eps, step_size=CFG.resolved_eval_step_size, steps=CFG.eval_steps)
    fast = engine.evaluate(batches, **attack)
    assert any(key[0] == "eval" for key in engine.graphs)
    ref = evaluate(model, batches, device="cuda", **attack)
    assert fast["test_clean_acc"] == pytest.approx(ref["test_clean_acc"], abs=100 * 3 / (GPU_STEPS * B))
    assert fast["test_pgd_acc"] == pytest.approx(ref["test_pgd_acc"], abs=10)
