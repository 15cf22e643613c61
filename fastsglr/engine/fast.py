"""The fast engine: the reference iteration (``iteration.train_step``), compiled, in mixed precision and channels-last,
and on CUDA captured once as a CUDA graph that is replayed for every batch.

It computes what ReferenceEngine computes: the same function runs, only the way it runs changes. Five switches
(``FastOptions``), each one rung of the ladder in ``bench/epochs_per_hour.py``:

    precision      fp32 | bf16 | fp16: autocast of every forward, the attack's included (fp16 adds a loss scale)
    channels_last  NHWC model and inputs: the layout in which cuDNN runs convolutions on tensor cores
    compile        torch.compile(fullgraph=True) of the whole iteration: random start, the PGD (or TRADES) loop with
                   its input gradients, the forwards, the label strategy, backward, the SGD update, the metrics
    fused          the engine's op set: FUSED_OPS of fastsglr.kernels; off, PLAIN_OPS, their plain PyTorch definitions
                   (the ladder's lower rungs). Chosen when the engine is built and passed down the iteration.
    cuda_graph     the compiled iteration captured once after a warm-up, then replayed: one launch per batch

A captured graph replays fixed kernels on fixed addresses, so the iteration never syncs with the host and keeps
everything it reads or writes in static tensors: each batch is copied into static inputs; the step counter and
the learning rate are device tensors filled before each replay (the schedule needs no re-capture); metrics add up
in static sums that are copied into the trainer's meter. The numbers of the objective and of the label strategy
(eps, step size, beta, r, T, alpha, lam, TE's momentum and weight) are device tensors too, so another configuration
in the same process (``fastsglr reproduce``) runs the graph already compiled for its structure (method, label
strategy, BN mode, steps, shapes). BatchNorm statistics, the SGLR table and the RNG advance
inside the iteration exactly as in the reference: same ops, same order, and random numbers from ATen's generator
(``fallback_random``), so compiled runs draw the numbers eager runs draw. The one host-side switch of a label
strategy, ``needs_clean_logits`` (SGLR's end of warm-up), selects the graph: one is captured for each value.
"""

import dataclasses
import warnings
from collections import Counter

import torch
from torch.optim.sgd import sgd

from ..data.loaders import Batch
from ..distributed import World, unwrap, wrap_model
from ..errors import UsageError
from ..kernels import FUSED_OPS, PLAIN_OPS
from ..metrics import CalibrationMeter, TrainMeter, evaluation_row
from ..objectives import Objective
from .iteration import eval_step, train_step

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# Uncaptured iterations before a capture: the first compiles, the second runs on the compiled code as the capture
# will (cuDNN/cuBLAS workspaces and lazily built state exist before the capture starts).
WARMUP_STEPS = 2


@dataclasses.dataclass(frozen=True)
class FastOptions:
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = True
    fused: bool = True
    cuda_graph: bool = False

    @classmethod
    def for_device(cls, device, precision: str = "") -> "FastOptions":
        """Everything on for CUDA, bf16 unless another precision is named; on a CPU: compiled, fp32 unless named
        (NHWC and graphs are GPU tricks)."""
        cuda = torch.device(device).type == "cuda"
        return cls(
            precision=precision or ("bf16" if cuda else "fp32"),
            channels_last=cuda,
            compile=True,
            fused=True,
            cuda_graph=cuda,
        )


class SGDUpdate:
    """``zero_grad`` and ``step`` of a torch.optim.SGD in a form Dynamo traces into the iteration's graph.

    torch.optim wraps ``SGD.step`` in two explicit graph breaks (pytorch#104053) and Dynamo skips ``zero_grad``, so
    this calls the functional ``sgd`` that ``SGD.step`` calls, with the optimizer's parameters, hyper-parameters and
    momentum buffers. Compiled, it reads the learning rate from a device tensor (``lr``, filled by ``load_lr``
    before each iteration): a schedule then needs neither a recompile nor a re-capture. Eager, it reads the float,
    since eager SGD turns a tensor learning rate into a host sync.
    """

    HYPER = ("weight_decay", "momentum", "dampening", "nesterov", "maximize")

    def __init__(self, optimizer, device):
        if not isinstance(optimizer, torch.optim.SGD):
            raise UsageError(f"the fast engine runs SGD, got {type(optimizer).__name__}: use --engine reference")
        if any(group["dampening"] for group in optimizer.param_groups):
            raise UsageError("the fast engine runs SGD without dampening: use --engine reference")
        self.optimizer = optimizer
        self.lr = [torch.zeros((), device=device) for _ in optimizer.param_groups]
        self.groups = []  # per param group: (parameters, momentum buffers, hyper-parameters), set by prepare()

    def prepare(self):
        """Before the first step (after any resume has loaded the optimizer's state): create missing momentum
        buffers as zeros, so they have addresses before a capture, bit-identical to SGD's own first step, which
        starts a buffer at the gradient (0.9 * 0 + g = g, no dampening); and take the groups as plain lists, so the
        compiled iteration never reads param_groups, whose float learning rate Dynamo would guard on (a recompile at
        every change)."""
        state = self.optimizer.state
        self.groups = []
        for group in self.optimizer.param_groups:
            params = list(group["params"])
            if group["momentum"]:
                for p in params:
                    state[p].setdefault("momentum_buffer", torch.zeros_like(p))
            buffers = [state[p].get("momentum_buffer") for p in params]
            self.groups.append((params, buffers, {key: group[key] for key in self.HYPER}))

    @property
    def params(self):
        return [p for params, _, _ in self.groups for p in params]

    def load_lr(self):
        for lr, group in zip(self.lr, self.optimizer.param_groups):
            lr.fill_(group["lr"])  # a fill kernel with the value as an argument: no sync, and outside any graph

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            p.grad = None

    def step(self, found_inf=None):
        """One SGD update. ``found_inf`` (fp16): a device flag; when set, weights and momentum keep their values
        (selected on the device; torch.compile refuses the fused SGD kernel that could skip by itself)."""
        with torch.no_grad():
            for i, (params, buffers, hyper) in enumerate(self.groups):
                live = [(p, b) for p, b in zip(params, buffers) if p.grad is not None]
                params, buffers = [p for p, _ in live], [b for _, b in live]
                state = params + [b for b in buffers if b is not None]
                before = None if found_inf is None else [t.clone() for t in state]
                lr = self.lr[i] if torch.compiler.is_compiling() else self.optimizer.param_groups[i]["lr"]
                sgd(params, [p.grad for p in params], buffers, foreach=True, lr=lr, **hyper)
                if found_inf is not None:
                    for t, old in zip(state, before):
                        t.copy_(torch.where(found_inf > 0, old, t))


class DeviceLossScale:
    """fp16's dynamic loss scale: torch.amp.GradScaler's interface, defaults and update rule, without its host sync
    (GradScaler reads the overflow flag with .item() to skip the step; here SGDUpdate reads it on the device)."""

    def __init__(self, device, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        self.factors = (growth_factor, backoff_factor, growth_interval)
        self.scale_factor = torch.full((), init_scale, device=device)
        self.growth_tracker = torch.zeros((), dtype=torch.int32, device=device)
        self.found_inf = torch.zeros((), device=device)

    def scale(self, loss):
        return loss * self.scale_factor

    def unscale_(self, optimizer):
        self.found_inf.zero_()
        grads = [p.grad for p in optimizer.params if p.grad is not None]
        inverse = self.scale_factor.double().reciprocal().float()  # GradScaler's rounding of 1 / scale
        torch._amp_foreach_non_finite_check_and_unscale_(grads, self.found_inf, inverse)

    def step(self, optimizer):
        optimizer.step(found_inf=self.found_inf)

    def update(self):
        torch._amp_update_scale_(self.scale_factor, self.growth_tracker, self.found_inf, *self.factors)


class CompiledWhole:
    """``torch.compile(fn, fullgraph=True)``: the iteration as one graph. A torch that cannot trace it whole gets a
    warning and a compile with graph breaks instead: the same ops in several graphs, still free of host syncs and
    still capturable, only slower. ``fullgraph`` says which one runs. A function that reached Dynamo's recompile
    limit (more structurally different runs in one process than ``torch._dynamo.config.recompile_limit``; numbers
    never recompile) gets a warning and runs eagerly: the same results, never a traceback."""

    def __init__(self, fn, backend="inductor"):
        self.fn, self.backend, self.fullgraph = fn, backend, True
        self.compiled = self._compile()

    def _compile(self):
        # fallback_random: compiled code draws from ATen's generator, as eager code does (same numbers).
        # dynamic=False: one batch shape per graph (training drops the last partial batch).
        # Another backend (census.py records the graphs) takes no Inductor options.
        options = {"options": {"fallback_random": True}} if self.backend == "inductor" else {}
        return torch.compile(self.fn, fullgraph=self.fullgraph, dynamic=False, backend=self.backend, **options)

    def __call__(self, *args):
        try:
            return self.compiled(*args)
        except torch._dynamo.exc.FailOnRecompileLimitHit as exc:  # raised before anything ran
            warnings.warn(
                f"torch.compile reached its recompile limit on {self.fn.__name__} "
                f"({str(exc).splitlines()[0]}); running it eagerly from now on"
            )
            self.compiled = self.fn
            return self.compiled(*args)
        except torch._dynamo.exc.Unsupported as exc:  # raised while tracing, before anything ran
            if not self.fullgraph:
                raise
            warnings.warn(
                f"torch {torch.__version__} cannot compile {self.fn.__name__} as one graph "
                f"({str(exc).splitlines()[0]}); compiling it with graph breaks"
            )
            self.fullgraph = False
            self.compiled = self._compile()
            return self.compiled(*args)


class FastEngine:
    """Runs ``train_step`` (and ``eval_step`` for ``evaluate``) with the speed switches of ``FastOptions``."""

    name = "fast"

    def __init__(
        self, model, optimizer, strategy, cfg, options: FastOptions | None = None, world=World(), distill=None
    ):
        self.device = next(model.parameters()).device
        self.options = options or FastOptions.for_device(self.device, cfg.precision)
        compile_module = world.launched and self.options.compile
        if world.launched:
            # Dynamo cannot trace DDP's Python forward into one graph (fullgraph), and DDP's gradient all-reduce
            # runs from autograd hooks on NCCL streams, which a capture would need a static DDP graph and
            # capture-safe NCCL settings for (not tested here). Under torchrun the model is compiled inside DDP
            # and the iteration around it runs eagerly, uncaptured.
            self.options = dataclasses.replace(self.options, compile=False, cuda_graph=False)
        if self.options.precision not in AUTOCAST_DTYPES:
            raise UsageError(
                f"unknown precision '{self.options.precision}': choose one of {', '.join(AUTOCAST_DTYPES)}"
            )
        if self.options.cuda_graph and (self.device.type != "cuda" or not self.options.compile):
            raise UsageError("a CUDA graph needs a CUDA device and the compiled iteration (it reads lr from memory)")
        if self.options.channels_last:
            model.to(memory_format=torch.channels_last)  # swaps each parameter's data: the optimizer keeps them
            if distill is not None:  # KD's teachers take the same NHWC inputs
                distill.to(memory_format=torch.channels_last)
        if compile_module:
            model = torch.compile(model, dynamic=False, options={"fallback_random": True})
        # DDP after the layout change: its gradient buckets take the parameters' strides when it is built.
        self.model, self.strategy = wrap_model(world, model, cfg.sync_bn), strategy
        self.objective = Objective.from_config(cfg, self.device, distill)
        self.optimizer = SGDUpdate(optimizer, self.device)
        self.autocast_dtype = AUTOCAST_DTYPES[self.options.precision]
        self.scaler = DeviceLossScale(self.device) if self.options.precision == "fp16" else None
        self.ops = FUSED_OPS if self.options.fused else PLAIN_OPS
        # Static state that a captured graph reads and writes; inputs get their shapes from the first batch.
        self.inputs, self.eval_inputs = None, None
        self.step_index = torch.zeros((), dtype=torch.int64, device=self.device)
        self.meter, self.meter_owner = TrainMeter(self.device), None
        self.clean, self.adv = CalibrationMeter(self.device), CalibrationMeter(self.device)
        # The evaluation attack's eps and step size, filled by evaluate(): read from memory like the objective's.
        self.eval_eps = torch.zeros((), dtype=torch.float64, device=self.device)
        self.eval_step_size = torch.zeros((), dtype=torch.float64, device=self.device)
        self.graphs, self.warmups = {}, Counter()
        if self.options.compile:
            self.train_fn, self.eval_fn = CompiledWhole(self._train_iteration), CompiledWhole(self._eval_batch)
        else:
            self.train_fn, self.eval_fn = self._train_iteration, self._eval_batch

    # ---- the two functions that get compiled and captured ------------------------------------------------------

    def _train_iteration(self):
        return train_step(
            self.model,
            self.optimizer,
            self.strategy,
            self.objective,
            self.inputs,
            self.meter,
            self.step_index,
            ops=self.ops,
            autocast_dtype=self.autocast_dtype,
            scaler=self.scaler,
        )

    def _eval_batch(self, images, labels, steps):
        eval_step(
            unwrap(self.model),
            images,
            labels,
            self.clean,
            self.adv,
            eps=self.eval_eps,
            step_size=self.eval_step_size,
            steps=steps,
            ops=self.ops,
            autocast_dtype=self.autocast_dtype,
        )

    # ---- training ----------------------------------------------------------------------------------------------

    def step(self, batch, meter, step):
        """One iteration on ``batch``; the trainer's ``meter`` receives the epoch's sums so far."""
        if self.inputs is None:  # first step, after any resume has loaded the optimizer state
            self.optimizer.prepare()
            self.inputs = self._static_like(batch)
        if meter is not self.meter_owner:  # a new epoch's meter (fresh, or a resumed epoch's): the static sums take it
            self.meter.load_(meter)
            self.meter_owner = meter
        for static, value in zip(self.inputs, batch):
            static.copy_(value, non_blocking=True)
        self.step_index.fill_(step)
        self.optimizer.load_lr()
        with torch._dynamo.config.patch(trace_autograd_ops=True):  # the training backward traced, not a break
            loss = self._run(self.train_fn, key=("train", self.strategy.needs_clean_logits))
        meter.sums.copy_(self.meter.sums)
        meter.first_bad_step.copy_(self.meter.first_bad_step)
        return loss

    def _static_like(self, batch):
        images = torch.empty_like(
            batch.images, memory_format=torch.channels_last if self.options.channels_last else torch.preserve_format
        )
        return Batch(images, *(torch.empty_like(t) for t in batch[1:]))

    def _run(self, fn, key):
        """Call ``fn``; with CUDA graphs: warm up, then capture once per ``key`` and replay from then on."""
        if not self.options.cuda_graph:
            return fn()
        if key in self.graphs:
            graph, output = self.graphs[key]
            graph.replay()
            return output
        if self.warmups[key] < WARMUP_STEPS:
            self.warmups[key] += 1
            # Warm-up runs on a side stream, as the capture will (the documented recipe for torch.cuda.graph).
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                output = fn()
            torch.cuda.current_stream().wait_stream(side)
            return output
        # A capture records without running: this iteration's batch is processed by the first replay below.
        graph = torch.cuda.CUDAGraph()
        # thread_local: FFCV's loader thread records CUDA events while the capture runs; that is not part of it.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            output = fn()
        self.graphs[key] = (graph, output)
        graph.replay()
        return output

    # ---- evaluation --------------------------------------------------------------------------------------------

    def evaluate(self, loader, *, eps, step_size, steps):
        """Clean and PGD accuracy and calibration on ``loader`` (what ``evaluation.evaluate`` returns).

        Full batches go through the compiled (and captured) eval step; a last, smaller batch runs it eagerly, so it
        costs neither a second compilation nor a second graph.
        """
        self.eval_eps.fill_(eps)
        self.eval_step_size.fill_(step_size)
        self.model.eval()
        self.clean.reset()
        self.adv.reset()
        with torch._dynamo.config.patch(trace_autograd_ops=True):
            for batch in loader:
                if self.eval_inputs is None:
                    self.eval_inputs = self._static_like(batch)
                if batch.images.shape != self.eval_inputs.images.shape:
                    self._eval_batch(batch.images, batch.labels, steps)
                    continue
                self.eval_inputs.images.copy_(batch.images, non_blocking=True)
                self.eval_inputs.labels.copy_(batch.labels, non_blocking=True)
                self._run(
                    lambda: self.eval_fn(self.eval_inputs.images, self.eval_inputs.labels, steps), key=("eval", steps)
                )
        return evaluation_row(self.clean, self.adv)
