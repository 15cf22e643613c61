"""The CPU stand-in's network (not from a paper): three conv-BN-ReLU stages with two 2x2 max-pools, then an MLP
head on the flattened 2 x 2 map, about 0.25 M parameters (``width`` and ``hidden``: the knobs the stand-in's search
turned, docs/reproduce.md).

Unlike ``smallcnn``'s global average pool, the flattened head lets the network fit its adversarial training examples
(on 8x8 digits at eps 0.2 the small CNN's training PGD accuracy stalls below 70 %), which is what robust overfitting
and the memorisation of noisy labels need: the phenomenon ``reproduce overfitting`` shows on 8x8 synthetic data.
"""

import torch
from torch import nn

from .normalize import Normalize
from .small_cnn import conv_bn_relu


class ConvMLP(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, mean, std, width: int = 64, hidden: int = 256):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(
            conv_bn_relu(in_channels, width),
            nn.MaxPool2d(2),
            conv_bn_relu(width, width),
            nn.MaxPool2d(2),
            conv_bn_relu(width, 2 * width),
            # 8x8 digits are 2 x 2 here already; larger images are pooled to the same head.
            nn.AdaptiveAvgPool2d(2),
        )
        self.head = nn.Sequential(nn.Linear(8 * width, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(self.features(self.normalize(x)), 1))


def conv_mlp(num_classes: int, in_channels: int, mean, std) -> ConvMLP:
    return ConvMLP(num_classes, in_channels, mean, std)
