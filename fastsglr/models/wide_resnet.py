"""WideResNet-34-10 / 28-10 as used by TRADES (github.com/yaodongyu/TRADES, models/wideresnet.py)
and Madry et al.'s CIFAR challenge; Zagoruyko & Komodakis 2016, "Wide Residual Networks".
Pre-activation blocks, dropout 0."""

import torch
import torch.nn.functional as F
from torch import nn

from .init import he_normal_convs_
from .normalize import Normalize

# TRADES' wide block is the pre-activation block (projection of the pre-activated input), only wider.
from .preact_resnet import PreActBlock as WideBlock


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen_factor: int, num_classes: int, in_channels: int, mean, std):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        groups = []
        for in_planes, out_planes, stride in zip(widths[:-1], widths[1:], (1, 2, 2)):
            blocks = [WideBlock(in_planes, out_planes, stride)]
            blocks += [WideBlock(out_planes, out_planes, 1) for _ in range(n - 1)]
            groups.append(nn.Sequential(*blocks))
        self.block1, self.block2, self.block3 = groups
        self.bn = nn.BatchNorm2d(widths[-1])
        # Adaptive pooling equals TRADES' avg_pool2d(8) at 32x32 and also serves smaller inputs.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # The TRADES initialisation (He normal, fan-out) that published WRN results were trained with.
        he_normal_convs_(self)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.normalize(x))
        out = self.block3(self.block2(self.block1(out)))
        out = self.pool(F.relu(self.bn(out)))
        return self.fc(torch.flatten(out, 1))


def wrn34_10(num_classes: int, in_channels: int, mean, std) -> WideResNet:
    return WideResNet(34, 10, num_classes, in_channels, mean, std)


def wrn28_10(num_classes: int, in_channels: int, mean, std) -> WideResNet:
    return WideResNet(28, 10, num_classes, in_channels, mean, std)
