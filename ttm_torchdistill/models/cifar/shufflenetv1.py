"""ShuffleNet v1 for CIFAR (Zhang et al. 2018) as the CRD benchmark builds it: ``shufflenetv1_cifar``.

Three groups (g = 3) and stage widths 240 / 480 / 960 with 4 / 8 / 4 units, after a 1x1 stem with 24
channels and no stem pooling, so a 32x32 input ends at 4x4 before the average pool. Module names match the
benchmark's released ``ShuffleV1`` checkpoints.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ._shared import channel_shuffle, reject_options

__all__ = ['CifarShuffleNetV1', 'shufflenetv1_cifar']

_STEM_CHANNELS = 24


class _ShuffleUnit(nn.Module):
    """Grouped 1x1, channel shuffle, 3x3 depthwise, grouped 1x1. Stride 2 concatenates a 3x3 average
    pool of the input (the unit then outputs ``in_channels + out_channels``); stride 1 adds the input."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int, first_groups: int) -> None:
        super().__init__()
        mid = out_channels // 4
        self.first_groups = first_groups
        self.conv1 = nn.Conv2d(in_channels, mid, 1, groups=first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_channels, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.pool = nn.AvgPool2d(3, 2, 1) if stride == 2 else None

    def forward(self, x: Tensor) -> Tensor:
        out = channel_shuffle(torch.relu(self.bn1(self.conv1(x))), self.first_groups)
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + x if self.pool is None else torch.cat([out, self.pool(x)], 1)
        return torch.relu(out)


class CifarShuffleNetV1(nn.Module):
    """ShuffleNet v1 for 32x32 inputs; ``widths`` and ``units`` per stage, ``groups`` for the 1x1 convolutions."""

    def __init__(self, num_classes: int = 100, widths: tuple[int, ...] = (240, 480, 960),
                 units: tuple[int, ...] = (4, 8, 4), groups: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, _STEM_CHANNELS, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(_STEM_CHANNELS)
        channels = _STEM_CHANNELS
        for index, (width, count) in enumerate(zip(widths, units, strict=True), start=1):
            # The first unit of a stage concatenates its pooled input, so its branch makes the remaining channels;
            # the stem's output is too narrow to group, so the very first 1x1 convolution is dense.
            stage = [_ShuffleUnit(channels, width - channels, 2, groups, 1 if index == 1 else groups)]
            stage += [_ShuffleUnit(width, width, 1, groups, groups) for _ in range(count - 1)]
            self.add_module(f'layer{index}', nn.Sequential(*stage))
            channels = width
        self.avgpool = nn.AvgPool2d(4)
        self.linear = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.linear(self.avgpool(x).flatten(1))


def shufflenetv1_cifar(num_classes: int = 100, **kwargs) -> CifarShuffleNetV1:
    """ShuffleNet v1, g = 3 (0.95 M parameters for 100 classes); the benchmark's ``ShuffleV1``."""
    reject_options('shufflenetv1_cifar', kwargs)
    return CifarShuffleNetV1(num_classes)
