"""The conv initialisation the published CIFAR robustness code bases share (SGLS's ResNet, TRADES' WideResNet)."""

import math

from torch import nn


def he_normal_convs_(module: nn.Module) -> None:
    """Every conv weight of ``module`` from N(0, sqrt(2 / (k*k*out_channels))) (He et al. 2015, fan-out), in place."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
