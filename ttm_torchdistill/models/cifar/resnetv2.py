"""ResNet-50 for CIFAR as the CRD benchmark builds it (its ``resnetv2.py``): ``resnet50_cifar``.

The ImageNet ResNet-50's bottleneck stages (3 / 4 / 6 / 3 blocks, 256 to 2048 channels) behind a 3x3
stride-1 stem without max pooling, so a 32x32 input ends at 4x4; global average pooling and a linear
classifier. Module names match the benchmark's released ``ResNet50`` checkpoints.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..init import init_weights
from ._shared import reject_options

__all__ = ['CifarResNet50', 'resnet50_cifar']

_EXPANSION = 4


class _Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4, each with BN; shortcut projected by a 1x1
    conv-BN when the shape changes; ReLU after the sum."""

    def __init__(self, in_channels: int, width: int, stride: int) -> None:
        super().__init__()
        out_channels = width * _EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        return torch.relu(self.bn3(self.conv3(out)) + self.shortcut(x))


class CifarResNet50(nn.Module):
    """Bottleneck ResNet for 32x32 inputs; ``blocks`` per stage (3, 4, 6, 3 for ResNet-50)."""

    def __init__(self, num_classes: int = 100, blocks: tuple[int, int, int, int] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        channels = 64
        stages = zip(blocks, (64, 128, 256, 512), (1, 2, 2, 2), strict=True)
        for index, (count, width, stride) in enumerate(stages, start=1):
            stage = []
            for i in range(count):
                stage.append(_Bottleneck(channels, width, stride if i == 0 else 1))
                channels = width * _EXPANSION
            self.add_module(f'layer{index}', nn.Sequential(*stage))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.linear(self.avgpool(x).flatten(1))


def resnet50_cifar(num_classes: int = 100, **kwargs) -> CifarResNet50:
    """ResNet-50 for CIFAR (23.7 M parameters for 100 classes); the benchmark's ``ResNet50`` teacher."""
    reject_options('resnet50_cifar', kwargs)
    return CifarResNet50(num_classes)
