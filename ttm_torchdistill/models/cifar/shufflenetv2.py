"""ShuffleNet v2 (1x) for CIFAR (Ma et al. 2018) as the CRD benchmark builds it: ``shufflenetv2_cifar``.

A 1x1 stem with 24 channels (no stem pooling), three stages of one down-sampling unit plus 3 / 7 / 3 basic
units at 116 / 232 / 464 channels, a 1x1 conv to 1024 channels, a 4x4 average pool and a linear classifier.
Module names match the benchmark's released ``ShuffleV2`` checkpoints.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ._shared import channel_shuffle, reject_options

__all__ = ['CifarShuffleNetV2', 'shufflenetv2_cifar']

_STEM_CHANNELS = 24


class _BasicUnit(nn.Module):
    """Split the channels in halves; 1x1-BN-ReLU, 3x3 depthwise-BN, 1x1-BN-ReLU on the second; concatenate, shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv1 = nn.Conv2d(half, half, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(half)
        self.conv2 = nn.Conv2d(half, half, 3, 1, 1, groups=half, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(half, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)

    def forward(self, x: Tensor) -> Tensor:
        kept, branch = x.chunk(2, dim=1)
        branch = torch.relu(self.bn1(self.conv1(branch)))
        branch = torch.relu(self.bn3(self.conv3(self.bn2(self.conv2(branch)))))
        return channel_shuffle(torch.cat([kept, branch], 1), 2)


class _DownUnit(nn.Module):
    """Two stride-2 branches on the whole input, each giving half of ``out_channels``; concatenate, shuffle.

    Left: 3x3 depthwise-BN, 1x1-BN-ReLU (modules 1-2). Right: 1x1-BN-ReLU, 3x3 depthwise-BN, 1x1-BN-ReLU (3-5).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        half = out_channels // 2
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 2, 1, groups=in_channels, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, half, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(half)
        self.conv3 = nn.Conv2d(in_channels, half, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(half)
        self.conv4 = nn.Conv2d(half, half, 3, 2, 1, groups=half, bias=False)
        self.bn4 = nn.BatchNorm2d(half)
        self.conv5 = nn.Conv2d(half, half, 1, bias=False)
        self.bn5 = nn.BatchNorm2d(half)

    def forward(self, x: Tensor) -> Tensor:
        left = torch.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = torch.relu(self.bn3(self.conv3(x)))
        right = torch.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return channel_shuffle(torch.cat([left, right], 1), 2)


class CifarShuffleNetV2(nn.Module):
    """ShuffleNet v2 for 32x32 inputs; ``widths``: the three stages' and the head's channels."""

    def __init__(self, num_classes: int = 100, widths: tuple[int, int, int, int] = (116, 232, 464, 1024),
                 units: tuple[int, int, int] = (3, 7, 3)) -> None:
        super().__init__()
        *stage_widths, head = widths
        self.conv1 = nn.Conv2d(3, _STEM_CHANNELS, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(_STEM_CHANNELS)
        channels = _STEM_CHANNELS
        for index, (width, count) in enumerate(zip(stage_widths, units, strict=True), start=1):
            stage = [_DownUnit(channels, width)] + [_BasicUnit(width) for _ in range(count)]
            self.add_module(f'layer{index}', nn.Sequential(*stage))
            channels = width
        self.conv2 = nn.Conv2d(channels, head, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(head)
        self.avgpool = nn.AvgPool2d(4)
        self.linear = nn.Linear(head, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.linear(self.avgpool(x).flatten(1))


def shufflenetv2_cifar(num_classes: int = 100, **kwargs) -> CifarShuffleNetV2:
    """ShuffleNet v2 1x (1.36 M parameters for 100 classes); the benchmark's ``ShuffleV2``."""
    reject_options('shufflenetv2_cifar', kwargs)
    return CifarShuffleNetV2(num_classes)
