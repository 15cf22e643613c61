"""What the fast engine's compiled iteration holds: graphs, graph breaks, ``convolution_backward`` nodes by output
mask, and the FLOPs of its matrix products and convolutions. Taken on any device without code generation:
``torch.compile`` with an ``aot_autograd`` backend that records the ATen graphs and runs them as they are (seconds,
not minutes, on a CPU).

    python -m fastsglr.engine.census [--model preactresnet18] [--method pgd-at] [--labels sglr] [--steps 2]

A ``convolution_backward`` output mask says which gradients a node computes: (input, weight, bias). The attack
needs input gradients only, so every attack step should hold one node per convolution with mask
(True, False, False), and the training backward one node per convolution and forward-with-grad that computes its
weight gradient. FLOPs use the formulas of ``torch.utils.flop_counter``; ``FlopCount`` counts the same formulas on
an eager run (``bench/epochs_per_hour.py`` uses it for MFU).
"""

import argparse
import dataclasses
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from ..config import Config
from ..data.loaders import Batch
from ..labels import build_label_strategy
from ..metrics import TrainMeter
from ..models import build_model
from ..optim import build_optimizer
from .fast import CompiledWhole, FastEngine, FastOptions


class FlopCount(TorchDispatchMode):
    """FlopCounterMode's per-op formulas (matrix products and convolutions, forward and backward), without its
    module tracker, whose backward hooks refuse the attack's input gradients."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in flop_registry:
            self.total += flop_registry[func.overloadpacket](*args, **(kwargs or {}), out_val=out)
        return out


def graph_flops(graph_module) -> int:
    """The same formulas over an ATen FX graph, from the shapes its nodes carry (``meta["val"]``)."""

    def value(arg):
        return arg.meta["val"] if isinstance(arg, torch.fx.Node) else arg

    total = 0
    for node in graph_module.graph.nodes:
        packet = getattr(node.target, "overloadpacket", None)
        if node.op == "call_function" and packet in flop_registry:
            args, kwargs = torch.utils._pytree.tree_map(value, (node.args, node.kwargs))
            total += flop_registry[packet](*args, **kwargs, out_val=node.meta["val"])
    return total


@dataclasses.dataclass
class Census:
    graphs: int  # graphs Dynamo compiled for one iteration
    graph_breaks: int
    convolutions: int  # Conv2d modules of the model
    conv_backward_masks: dict  # (input, weight, bias) output mask -> number of convolution_backward nodes
    flops: int  # of the compiled iteration (forward and backward graphs)
    forward_flops: int  # of one eager forward of the batch

    @property
    def forward_equivalents(self) -> float:
        """The iteration's work in forwards of the batch (24 for PGD-10 + SGLR with input-only attack gradients)."""
        return self.flops / self.forward_flops

    def lines(self) -> list:
        masks = ", ".join(f"{list(mask)} x {n}" for mask, n in sorted(self.conv_backward_masks.items(), reverse=True))
        return [
            f"graphs {self.graphs}, graph breaks {self.graph_breaks}, convolutions {self.convolutions}",
            f"convolution_backward nodes by output mask [input, weight, bias]: {masks}",
            f"{self.flops / 1e9:.3f} GFLOP per iteration = {self.forward_equivalents:.2f} forward-equivalents",
        ]


def take_census(cfg: Config, *, num_classes=10, in_channels=3, image_size=32, seed=0, distill=None) -> Census:
    """One iteration of a compiled fp32 fast engine on ``cfg`` (model, method, labels, BN mode, attack steps, batch
    size) on random CPU data, through the recording backend; ``distill``: KD's teachers (``distill.Distillation``)."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._dynamo.utils import counters

    gen = torch.Generator().manual_seed(seed)
    batch_size, n = cfg.batch_size, 2 * cfg.batch_size
    train_labels = torch.randint(0, num_classes, (n,), generator=gen)
    index = torch.randperm(n, generator=gen)[:batch_size]
    images = torch.rand(batch_size, in_channels, image_size, image_size, generator=gen)
    batch = Batch(images, train_labels[index], train_labels[index], index)
    torch.manual_seed(seed)
    model = build_model(cfg.model, num_classes, in_channels, image_size)
    strategy = build_label_strategy(cfg, train_labels, num_classes)
    optimizer = build_optimizer(model.parameters(), cfg)
    engine = FastEngine(model, optimizer, strategy, cfg, FastOptions(precision="fp32", compile=True), distill=distill)
    with FlopCount() as forward, torch.no_grad():
        model.eval()(images)

    graphs = []

    def record(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module  # run the ATen graph as it is: what it holds is the point, not its speed

    torch._dynamo.reset()
    counters.clear()
    engine.train_fn = CompiledWhole(
        engine._train_iteration, backend=aot_autograd(fw_compiler=record, bw_compiler=record)
    )
    model.train()
    engine.step(batch, TrainMeter("cpu"), 0)
    masks = Counter(
        tuple(node.args[-1])
        for gm in graphs
        for node in gm.graph.nodes
        if node.target is torch.ops.aten.convolution_backward.default
    )
    return Census(
        graphs=counters["stats"]["unique_graphs"],
        graph_breaks=sum(counters["graph_break"].values()),
        convolutions=sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()),
        conv_backward_masks=dict(masks),
        flops=sum(graph_flops(gm) for gm in graphs),
        forward_flops=forward.total,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="preactresnet18")
    parser.add_argument("--method", default="pgd-at")
    parser.add_argument("--labels", default="sglr")
    parser.add_argument("--attack-bn-mode", default="eval")
    parser.add_argument("--steps", type=int, default=2, help="attack steps")
    parser.add_argument("--batch-size", type=int, default=2)
    args = parser.parse_args(argv)
    cfg = Config(
        model=args.model,
        method=args.method,
        labels=args.labels,
        attack_bn_mode=args.attack_bn_mode,
        attack_steps=args.steps,
        batch_size=args.batch_size,
    )
    census = take_census(cfg)
    print(
        f"torch {torch.__version__}: {args.model}, {args.method} + {args.labels}, PGD-{args.steps}, "
        f"attack BN mode {args.attack_bn_mode}, batch {args.batch_size}"
    )
    print("\n".join(census.lines()))


if __name__ == "__main__":
    main()
