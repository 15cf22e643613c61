"""A small conv net for CPU demos and tests (not from a paper): three conv-BN-ReLU stages,
two 2x2 max-pools and a global average pool, about 0.1 M parameters."""

import torch
from torch import nn

from .normalize import Normalize


def conv_bn_relu(in_planes: int, out_planes: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_planes),
        nn.ReLU(),
    )


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, mean, std):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(
            conv_bn_relu(in_channels, 32),
            nn.MaxPool2d(2),
            conv_bn_relu(32, 64),
            nn.MaxPool2d(2),
            conv_bn_relu(64, 128),
            # Global pooling keeps the head independent of image size (8x8 digits to 32x32 CIFAR).
            nn.AdaptiveAvgPool2d(1),
        )
        self.linear = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(self.features(self.normalize(x)), 1))


def small_cnn(num_classes: int, in_channels: int, mean, std) -> SmallCNN:
    return SmallCNN(num_classes, in_channels, mean, std)
