"""ResNet-18, -34 and -50, CIFAR variant (He et al. 2016, as in github.com/kuangliu/pytorch-cifar): 3x3 stride-1 stem
without max-pool, so 32x32 inputs reach the last stage at 4x4; post-activation blocks (conv-BN-ReLU, the sum, then
ReLU).

ResNet-18 is the paper's network (Sec. 4: "We use ResNet-18 as our default network architecture"), exactly as the
authors' released code builds it (devicerxx/SGLS, ``models/resnet.py``, which ``scripts/cifar10/run_sgls.sh`` selects
with ``ARCH=resnet18``): kuangliu's blocks, with every conv weight drawn from N(0, sqrt(2 / (k*k*out_channels)))
(He-normal, fan-out) and BatchNorm and the linear layer left at PyTorch's defaults. ResNet-34 (a Table B.3 source)
is the same class there. ResNet-50, the other Table B.3 source, is not in that repository; it is this class with
kuangliu's Bottleneck, initialised the same way. The authors feed raw [0, 1] inputs; whether a model normalises
its inputs is the caller's choice (``mean``/``std``, see ``fastsglr.models.build_model``)."""

import torch
import torch.nn.functional as F
from torch import nn

from .init import he_normal_convs_
from .normalize import Normalize


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """Identity where shapes agree, else the projection (option B of He et al.): 1x1 conv + BN."""
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False), nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand to 4x the width."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = self.expansion * planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = _shortcut(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, block, num_blocks, num_classes: int, in_channels: int, mean, std):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        layers = []
        for planes, n, stride in zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2)):
            blocks = []
            for s in [stride] + [1] * (n - 1):
                blocks.append(block(in_planes, planes, s))
                in_planes = block.expansion * planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        # Adaptive pooling equals avg_pool2d(4) at 32x32 and also serves smaller inputs.
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_classes)
        # The SGLS code's ResNet.__init__: He-normal convs; its BN fill (weight 1, bias 0) is PyTorch's default, and
        # the linear layer keeps PyTorch's default (kaiming-uniform weight, uniform bias).
        he_normal_convs_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(self.normalize(x))))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(torch.flatten(self.pool(out), 1))


def resnet18(num_classes: int, in_channels: int, mean, std) -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels, mean, std)


def resnet34(num_classes: int, in_channels: int, mean, std) -> ResNet:
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, in_channels, mean, std)


def resnet50(num_classes: int, in_channels: int, mean, std) -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels, mean, std)
