"""Model zoo. Every model takes inputs in [0, 1] and normalises them in its first layer.

model = build_model("preactresnet18", num_classes=10, in_channels=3, image_size=32,
                    mean=(0.4914, 0.4822, 0.4465), std=(0.2471, 0.2435, 0.2616))
"""

from collections.abc import Sequence

from torch import nn

from .conv_mlp import conv_mlp
from .normalize import Normalize
from .preact_resnet import preact_resnet18
from .resnet import resnet18, resnet34, resnet50
from .small_cnn import small_cnn
from .wide_resnet import wrn28_10, wrn34_10

_REGISTRY = {
    "preactresnet18": preact_resnet18,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "wrn34_10": wrn34_10,
    "wrn28_10": wrn28_10,
    "smallcnn": small_cnn,
    "convmlp": conv_mlp,
}
MODEL_NAMES = tuple(_REGISTRY)

# Every model halves the resolution at most three times and ends in a global pool.
MIN_IMAGE_SIZE = 8


def build_model(
    name: str,
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> nn.Module:
    """Build a model by name. ``mean``/``std`` default to 0/1 (no normalisation, as in TRADES)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}: choose one of {', '.join(MODEL_NAMES)}")
    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"image_size must be >= {MIN_IMAGE_SIZE}, got {image_size}")
    mean = (0.0,) * in_channels if mean is None else tuple(mean)
    std = (1.0,) * in_channels if std is None else tuple(std)
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"mean and std need in_channels={in_channels} entries, got {len(mean)} and {len(std)}")
    return _REGISTRY[name](num_classes=num_classes, in_channels=in_channels, mean=mean, std=std)


__all__ = ["MODEL_NAMES", "MIN_IMAGE_SIZE", "Normalize", "build_model"]
