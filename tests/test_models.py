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
    assert MODEL_NAMES == ("preactresnet18", "resnet18", "resnet34", "resnet50", "wrn34_10", "wrn28_10", "smallcnn")


# The big WRNs only get the CIFAR-100 combo to keep the CPU run short; every model sees
# a non-3-channel input and a non-32 size somewhere.
SHAPE_CASES = [
    ("smallcnn", 1, 8, 10),
    ("smallcnn", 3, 32, 100),
    ("smallcnn", 2, 13, 7),
    ("preactresnet18", 1, 8, 10),
    ("preactresnet18", 3, 32, 100),
    ("resnet18", 1, 8, 10),
    ("resnet18", 3, 32, 100),
    ("resnet34", 1, 8, 10),     # 8x8 grey: what the transfer table's sources see on digits
    ("resnet34", 3, 32, 100),
    ("resnet50", 1, 8, 10),
    ("resnet50", 3, 32, 100),
    ("wrn34_10", 3, 32, 100),
    ("wrn28_10", 1, 8, 10),
]


@pytest.mark.parametrize("name,in_channels,image_size,num_classes", SHAPE_CASES)
def test_output_shape(name, in_channels, image_size, num_classes):
    mean, std = _stats(in_channels)
    model = build_model(name, num_classes=num_classes, in_channels=in_channels,
                        image_size=image_size, mean=mean, std=std)
    x = torch.rand(2, in_channels, image_size, image_size)
    out = model(x)
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()


def test_every_model_covered_by_shape_cases():
    assert {case[0] for case in SHAPE_CASES} == set(MODEL_NAMES)


@pytest.mark.parametrize("name,expected", [
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
])
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


@pytest.mark.parametrize("name,bottleneck,num_blocks", [
    ("resnet18", False, (2, 2, 2, 2)), ("resnet34", False, (3, 4, 6, 3)), ("resnet50", True, (3, 4, 6, 3)),
])
def test_resnet_parameter_counts_match_closed_form(name, bottleneck, num_blocks):
    for num_classes, in_channels in ((10, 3), (100, 1)):
        model = build_model(name, num_classes=num_classes, in_channels=in_channels)
        assert _n_params(model) == _kuangliu_resnet_params(bottleneck, num_blocks, num_classes, in_channels)


def test_smallcnn_is_small():
    assert _n_params(build_model("smallcnn", num_classes=10, in_channels=1, image_size=8)) < 500_000


@pytest.mark.parametrize("name,in_channels", [("smallcnn", 1), ("preactresnet18", 3), ("resnet18", 3),
                                              ("resnet50", 3)])
def test_normalisation_is_first_layer(name, in_channels):
    mean, std = _stats(in_channels)
    model = build_model(name, in_channels=in_channels, image_size=16, mean=mean, std=std).eval()
    plain = build_model(name, in_channels=in_channels, image_size=16,
                        mean=(0.0,) * in_channels, std=(1.0,) * in_channels).eval()
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith("normalize.")}
    missing, unexpected = plain.load_state_dict(weights, strict=False)
    assert sorted(missing) == ["normalize.mean", "normalize.std"] and not unexpected

    x = torch.rand(3, in_channels, 16, 16)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), plain((x - m) / s))


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


@pytest.mark.parametrize("name", ["smallcnn", "preactresnet18", "wrn28_10"])
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
        "smallcnn"
    )


@pytest.mark.parametrize("kwargs", [
    {"in_channels": 3, "mean": (0.5,), "std": (0.5, 0.5, 0.5)},
    {"in_channels": 1, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
    {"image_size": 4},
])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        build_model("smallcnn", **kwargs)


def test_normalize_rejects_nonpositive_std():
    with pytest.raises(ValueError):
        Normalize((0.5,), (0.0,))
