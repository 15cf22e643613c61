"""The compiled iteration as torch.compile sees it (``fastsglr.engine.census``): one graph, no break, and no wasted
pass: every attack step computes input gradients only, weight gradients are computed once per convolution and
forward-with-grad, in the training backward. `make test` runs this file under torch 2.14 and under the GPU box's
torch 2.11 (.venv-torch211)."""

import pytest
import torch

from fastsglr.config import Config
from fastsglr.data.loaders import Batch
from fastsglr.engine.census import FlopCount, take_census
from fastsglr.engine.reference import ReferenceEngine
from fastsglr.labels import build_label_strategy
from fastsglr.metrics import TrainMeter
from fastsglr.models import build_model
from fastsglr.optim import build_optimizer

INPUT_ONLY = (True, False, False)


def test_preactresnet18_pgd2_is_one_graph_with_input_only_attack_gradients():
    """PreAct ResNet-18 (20 convolutions: the stem, 16 in the blocks, 3 shortcuts), PGD-2 + SGLR: 2 x 20 attack
    nodes computing input gradients only, and 20 training-backward nodes computing weight gradients, of which only
    the stem's skips the input gradient (the image needs none)."""
    census = take_census(Config(model="preactresnet18", attack_steps=2, batch_size=2, labels="sglr"))
    print(f"\ntorch {torch.__version__}:", *census.lines(), sep="\n  ")
    assert (census.graphs, census.graph_breaks, census.convolutions) == (1, 0, 20)
    assert census.conv_backward_masks == {INPUT_ONLY: 2 * 20, (True, True, False): 19, (False, True, False): 1}


@pytest.mark.parametrize(
    "method,labels,bn_mode",
    [
        ("pgd-at", "hard", "eval"),
        ("pgd-at", "ls", "train"),
        ("pgd-at", "te", "eval"),
        ("pgd-at", "sglr", "train"),
        ("trades", "hard", "train"),
        ("trades", "ls", "eval"),
        ("trades", "te", "train"),
        ("trades", "sglr", "eval"),
    ],
)
def test_every_method_strategy_and_bn_mode_is_one_graph_without_wasted_gradients(method, labels, bn_mode):
    """Every method x label-strategy pair, each strategy and each method under both attack BN modes (a train-mode
    attack updates BN running statistics inside the graph)."""
    steps = 2
    census = take_census(
        Config(
            model="smallcnn", method=method, labels=labels, attack_bn_mode=bn_mode, attack_steps=steps, batch_size=4
        ),
        in_channels=1,
        image_size=8,
    )
    assert (census.graphs, census.graph_breaks) == (1, 0)
    forwards_with_grad = 2 if method == "trades" else 1  # TRADES differentiates its clean and adversarial forwards
    weight_nodes = sum(n for mask, n in census.conv_backward_masks.items() if mask[1])
    assert census.conv_backward_masks[INPUT_ONLY] == steps * census.convolutions
    assert weight_nodes == forwards_with_grad * census.convolutions
    assert sum(census.conv_backward_masks.values()) == (steps + forwards_with_grad) * census.convolutions


def test_pgd10_sglr_iteration_is_24_forward_equivalents():
    """PGD-10 + SGLR: 10 x (forward + input gradient) + forward and backward + the clean forward = 24 forwards of
    the batch (less the stem's input gradient, 0.3% of a forward). A weight gradient in each attack step would make
    it 34. The compiled graph's count equals the eager reference iteration's, counted op by op as it runs."""
    cfg = Config(model="preactresnet18", attack_steps=10, batch_size=2, labels="sglr")
    census = take_census(cfg)
    print(f"\ntorch {torch.__version__}:", *census.lines(), sep="\n  ")
    assert round(census.forward_equivalents, 1) == 24.0

    gen = torch.Generator().manual_seed(0)
    train_labels = torch.randint(0, 10, (4,), generator=gen)
    batch = Batch(torch.rand(2, 3, 32, 32, generator=gen), train_labels[:2], train_labels[:2], torch.arange(2))
    model = build_model("preactresnet18", 10, 3, 32)
    strategy = build_label_strategy(cfg, train_labels, 10)
    engine = ReferenceEngine(model, build_optimizer(model.parameters(), cfg), strategy, cfg)
    with FlopCount() as eager:
        engine.step(batch, TrainMeter("cpu"), 0)
    assert eager.total == census.flops
