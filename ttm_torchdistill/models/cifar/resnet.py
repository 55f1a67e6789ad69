"""CIFAR ResNets with basic blocks and four widths (CRD benchmark): ``resnet8x4`` and ``resnet32x4``.

A 3x3 stem, three stages of ``(depth - 2) / 6`` basic blocks at 32x32, 16x16 and 8x8, an 8x8 average pool
and a linear classifier. The ``x4`` models widen the stem and the stages to 32 / 64 / 128 / 256 channels.
Module names match the benchmark's released checkpoints.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..init import init_weights
from ._shared import reject_options

__all__ = ['CifarResNet', 'resnet8x4', 'resnet32x4']


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)


class _BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut (1x1 conv-BN projection when the shape changes), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor) -> Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return torch.relu(out + shortcut)


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs; ``widths`` are the stem's and the three stages' channel counts."""

    def __init__(self, depth: int, widths: tuple[int, int, int, int], num_classes: int = 100) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f'CifarResNet depth must be 6n+2, got {depth}')
        blocks_per_stage = (depth - 2) // 6
        stem, *stage_widths = widths
        self.conv1 = _conv3x3(3, stem)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        channels = stem
        for index, (width, stride) in enumerate(zip(stage_widths, (1, 2, 2), strict=True), start=1):
            blocks = [_BasicBlock(channels if i == 0 else width, width, stride if i == 0 else 1)
                      for i in range(blocks_per_stage)]
            self.add_module(f'layer{index}', nn.Sequential(*blocks))
            channels = width
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


def resnet8x4(num_classes: int = 100, **kwargs) -> CifarResNet:
    """ResNet-8x4 (1.23 M parameters for 100 classes), the benchmark's student for resnet32x4."""
    reject_options('resnet8x4', kwargs)
    return CifarResNet(8, (32, 64, 128, 256), num_classes)


def resnet32x4(num_classes: int = 100, **kwargs) -> CifarResNet:
    """ResNet-32x4 (7.43 M parameters for 100 classes), a teacher of the benchmark."""
    reject_options('resnet32x4', kwargs)
    return CifarResNet(32, (32, 64, 128, 256), num_classes)
