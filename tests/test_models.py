import pytest
import torch

from fastsglr.models import MODEL_NAMES, Normalize, build_model

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2471, 0.2435, 0.2616)


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _stats(in_channels: int):
    """Distinct, non-trivial per-channel constants, so a channel mix-up would show."""
    mean = tuple(0.3 + 0.1 * c for c in range(in_channels))
    std = tuple(0.2 + 0.05 * c for c in range(in_channels))
    return mean, std


def test_model_names():
    assert MODEL_NAMES == (
        "preactresnet18",
        "resnet18",
        "resnet34",
        "resnet50",
        "wrn34_10",
        "wrn28_10",
        "smallcnn",
        "convmlp",
    )


# The big WRNs only get the CIFAR-100 combo to keep the CPU run short; every model sees
# a non-3-channel input and a non-32 size somewhere.
SHAPE_CASES = [
    ("smallcnn", 1, 8, 10),
    ("smallcnn", 3, 32, 100),
    ("smallcnn", 2, 13, 7),
    ("convmlp", 1, 8, 10),
    ("convmlp", 3, 32, 100),
    ("convmlp", 2, 13, 7),
    ("preactresnet18", 1, 8, 10),
    ("preactresnet18", 3, 32, 100),
    ("resnet18", 1, 8, 10),
    ("resnet18", 3, 32, 100),
    ("resnet34", 1, 8, 10),  # 8x8 grey: what the transfer table's sources see on digits
    ("resnet34", 3, 32, 100),
    ("resnet50", 1, 8, 10),
    ("resnet50", 3, 32, 100),
    ("wrn34_10", 3, 32, 100),
    ("wrn28_10", 1, 8, 10),
]


@pytest.mark.parametrize("name,in_channels,image_size,num_classes", SHAPE_CASES)
def test_output_shape(name, in_channels, image_size, num_classes):
    mean, std = _stats(in_channels)
    model = build_model(
        name, num_classes=num_classes, in_channels=in_channels, image_size=image_size, mean=mean, std=std
    )
    x = torch.rand(2, in_channels, image_size, image_size)
    out = model(x)
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()


def test_every_model_covered_by_shape_cases():
    assert {case[0] for case in SHAPE_CASES} == set(MODEL_NAMES)


@pytest.mark.parametrize(
    "name,expected",
    [
        # Rice et al.'s PreActResNet18 has a final BN(512) before pooling; kuangliu/pytorch-cifar's
        # (and so the often-quoted 11,171,146) lacks it: 11,171,146 + 2 * 512 = 11,172,170.
        ("preactresnet18", 11_172_170),
        ("resnet18", 11_173_962),
        # kuangliu/pytorch-cifar's ResNet34 and ResNet50 (the Table B.3 sources); the closed form below agrees.
        ("resnet34", 21_282_122),
        ("resnet50", 23_520_842),
        # TRADES' WideResNet also builds an unused `sub_block1`; it never runs, so we omit it.
        ("wrn34_10", 46_160_474),
        ("wrn28_10", 36_479_194),
    ],
)
def test_parameter_counts(name, expected):
    assert _n_params(build_model(name, num_classes=10)) == expected


def _kuangliu_resnet_params(bottleneck: bool, num_blocks, num_classes=10, in_channels=3) -> int:
    """Parameters of kuangliu's CIFAR ResNet counted from its definition, not from a model: a k x k conv without bias
    has k*k*in*out weights, a BatchNorm 2 per channel (its running stats are buffers), the linear layer in*out + out.
    Normalisation here is a layer of buffers only, so it adds nothing."""

    def conv_bn(k, cin, cout):
        return k * k * cin * cout + 2 * cout

    total, width = conv_bn(3, in_channels, 64), 64
    for planes, n, stride in zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2)):
        for s in [stride] + [1] * (n - 1):
            out = 4 * planes if bottleneck else planes
            if bottleneck:
                total += conv_bn(1, width, planes) + conv_bn(3, planes, planes) + conv_bn(1, planes, out)
            else:
                total += conv_bn(3, width, planes) + conv_bn(3, planes, planes)
            if s != 1 or width != out:  # projection shortcut
                total += conv_bn(1, width, out)
            width = out
    return total + width * num_classes + num_classes


@pytest.mark.parametrize(
    "name,bottleneck,num_blocks",
    [
        ("resnet18", False, (2, 2, 2, 2)),
        ("resnet34", False, (3, 4, 6, 3)),
        ("resnet50", True, (3, 4, 6, 3)),
    ],
)
def test_resnet_parameter_counts_match_closed_form(name, bottleneck, num_blocks):
    for num_classes, in_channels in ((10, 3), (100, 1)):
        model = build_model(name, num_classes=num_classes, in_channels=in_channels)
        assert _n_params(model) == _kuangliu_resnet_params(bottleneck, num_blocks, num_classes, in_channels)


def test_smallcnn_is_small():
    assert _n_params(build_model("smallcnn", num_classes=10, in_channels=1, image_size=8)) < 500_000


@pytest.mark.parametrize(
    "name,in_channels", [("smallcnn", 1), ("convmlp", 1), ("preactresnet18", 3), ("resnet18", 3), ("resnet50", 3)]
)
def test_normalisation_is_first_layer(name, in_channels):
    mean, std = _stats(in_channels)
    model = build_model(name, in_channels=in_channels, image_size=16, mean=mean, std=std).eval()
    plain = build_model(
        name, in_channels=in_channels, image_size=16, mean=(0.0,) * in_channels, std=(1.0,) * in_channels
    ).eval()
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith("normalize.")}
    missing, unexpected = plain.load_state_dict(weights, strict=False)
    assert sorted(missing) == ["normalize.mean", "normalize.std"] and not unexpected

    x = torch.rand(3, in_channels, 16, 16)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain((x - m) / s))


def test_convmlp_equals_a_functional_rewrite_in_float64():
    """The digits stand-in's network, written out with torch.nn.functional from its own weights: three 3x3 conv-BN-ReLU
    stages of 64, 64, 128 channels, 2x2 max-pools after the first two, the 2 x 2 map flattened into a 512-256-10 MLP."""
    torch.manual_seed(3)
    mean, std = (0.3,), (0.2,)
    model = build_model("convmlp", num_classes=10, in_channels=1, image_size=8, mean=mean, std=std).double().train()
    with torch.no_grad():  # BN statistics away from (0, 1), so eval mode's normalisation is exercised
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0), m.weight.uniform_(0.5, 1.5)
    model.eval()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [c.out_channels for c in convs] == [64, 64, 128] and [lin.out_features for lin in linears] == [256, 10]
    expected_params = (9 * 64 + 2 * 64) + (9 * 64 * 64 + 2 * 64) + (9 * 64 * 128 + 2 * 128) + (512 * 256 + 256)
    assert _n_params(model) == expected_params + 256 * 10 + 10

    x = torch.rand(5, 1, 8, 8, dtype=torch.float64)
    h = (x - model.normalize.mean) / model.normalize.std  # the float32-rounded 0.3 and 0.2 it stores
    for i, (conv, bn) in enumerate(zip(convs, bns)):
        h = torch.nn.functional.conv2d(h, conv.weight, padding=1)
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        h = torch.relu((h - bn.running_mean[:, None, None]) * scale[:, None, None] + bn.bias[:, None, None])
        if i < 2:
            h = torch.nn.functional.max_pool2d(h, 2)
    h = torch.relu(h.flatten(1) @ linears[0].weight.T + linears[0].bias)
    with torch.no_grad():
        torch.testing.assert_close(model(x), h @ linears[1].weight.T + linears[1].bias, rtol=1e-12, atol=1e-12)


def test_normalize_constants_are_buffers():
    model = build_model("smallcnn", in_channels=3, mean=CIFAR_MEAN, std=CIFAR_STD)
    buffers = dict(model.named_buffers())
    torch.testing.assert_close(buffers["normalize.mean"].flatten(), torch.tensor(CIFAR_MEAN))
    torch.testing.assert_close(buffers["normalize.std"].flatten(), torch.tensor(CIFAR_STD))
    assert "normalize.mean" in model.state_dict()
    assert not any(n.startswith("normalize.") for n, _ in model.named_parameters())


def test_default_normalisation_is_identity():
    x = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(build_model("smallcnn").normalize(x), x)


def test_channels_last_matches_contiguous():
    model = build_model("resnet18", mean=CIFAR_MEAN, std=CIFAR_STD).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["smallcnn", "convmlp", "preactresnet18", "wrn28_10"])
def test_traces_without_graph_breaks(name):
    # backend="eager" runs only Dynamo's capture, which is where fullgraph=True would fail.
    torch._dynamo.reset()
    model = build_model(name, in_channels=1, image_size=8, mean=(0.5,), std=(0.25,))
    x = torch.rand(2, 1, 8, 8)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x))


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown model 'vgg16'") as err:
        build_model("vgg16")
    assert str(err.value) == (
        "unknown model 'vgg16': choose one of preactresnet18, resnet18, resnet34, resnet50, wrn34_10, wrn28_10, "
        "smallcnn, convmlp"
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_channels": 3, "mean": (0.5,), "std": (0.5, 0.5, 0.5)},
        {"in_channels": 1, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
        {"image_size": 4},
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        build_model("smallcnn", **kwargs)


def test_normalize_rejects_nonpositive_std():
    with pytest.raises(ValueError):
        Normalize((0.5,), (0.0,))


# ---- the authors' ResNet-18 (devicerxx/SGLS models/resnet.py), rebuilt here independently -----------------------


class _AuthorsBlock(torch.nn.Module):
    """Post-activation basic block: relu(bn(conv)), bn(conv), + shortcut (1x1 conv + BN when the shape changes),
    relu."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        nn = torch.nn
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class _AuthorsResNet18(torch.nn.Module):
    """No input normalisation; He-normal convs drawn after every module exists; avg_pool2d(4) at 32x32."""

    def __init__(self, num_classes=10):
        super().__init__()
        nn = torch.nn
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64)
        cin, stages = 64, []
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(_AuthorsBlock(cin, cout, stride), _AuthorsBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.linear = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                k, out = m.kernel_size, m.out_channels
                m.weight.data.normal_(0, (2.0 / (k[0] * k[1] * out)) ** 0.5)

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.layer4(self.layer3(self.layer2(self.layer1(y))))
        return self.linear(torch.nn.functional.avg_pool2d(y, 4).flatten(1))


def test_resnet18_is_the_authors_network_weight_for_weight_and_logit_for_logit():
    torch.manual_seed(11)
    ours = build_model("resnet18", num_classes=10)  # no mean/std: raw [0, 1] inputs, as the authors'
    torch.manual_seed(11)
    theirs = _AuthorsResNet18(10)
    # Same modules created in the same order, then the same conv re-draw: the same seed gives the same weights.
    ours_state = {k: v for k, v in ours.state_dict().items() if not k.startswith("normalize.")}
    assert list(ours_state) == list(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours_state[key], value), key
    assert _n_params(ours) == _n_params(theirs) == 11_173_962

    # Any weights (random BN statistics and affine parameters too): the same logits in both modes.
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for name, b in theirs.named_buffers():
            if name.endswith("running_mean"):
                b.normal_(0, 0.1)
            elif name.endswith("running_var"):
                b.uniform_(0.5, 1.5)
    ours.load_state_dict(
        {**theirs.state_dict(), **{k: v for k, v in ours.state_dict().items() if k.startswith("normalize.")}}
    )
    ours, theirs = ours.double(), theirs.double()  # float64: only the order of additions may differ
    x = torch.rand(4, 3, 32, 32, dtype=torch.float64)
    for mode in (False, True):
        ours.train(mode), theirs.train(mode)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), theirs(x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_resnet_init_statistics_follow_the_authors_formulas(name):
    """Convs ~ N(0, sqrt(2 / (k*k*out))) (He-normal, fan-out), BN weight 1 / bias 0, linear at PyTorch's default
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias. Tolerances: 5 standard errors of the sample mean
    (sigma / sqrt(n)) and of the sample std (sigma / sqrt(2n)) for a normal sample of n weights."""
    torch.manual_seed(3)
    model = build_model(name, num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == {"resnet18": 20, "resnet34": 36, "resnet50": 53}[name]
    for conv in convs:
        w = conv.weight.detach().double().flatten()
        sigma = (2.0 / (conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels)) ** 0.5
        n = w.numel()
        assert abs(w.mean().item()) < 5 * sigma / n**0.5, conv
        assert abs(w.std().item() - sigma) < 5 * sigma / (2 * n) ** 0.5, conv
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(bn.bias, torch.zeros_like(bn.bias))
    linear = model.linear
    bound = 1.0 / linear.in_features**0.5
    for t in (linear.weight, linear.bias):
        assert t.abs().max().item() <= bound
    w = linear.weight.detach().double().flatten()
    uniform_sd = bound / 3**0.5  # of U(-b, b); the sample std's own sd is about b / sqrt(5 n) for a uniform
    assert abs(w.std().item() - uniform_sd) < 5 * bound / (5 * w.numel()) ** 0.5
