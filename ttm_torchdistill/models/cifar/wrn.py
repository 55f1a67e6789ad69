"""Wide ResNets for CIFAR (Zagoruyko & Komodakis 2016) as the CRD benchmark builds them.

WRN-d-k: a 3x3 stem with 16 channels, three stages of ``(d - 4) / 6`` pre-activation blocks with
16k / 32k / 64k channels, BN-ReLU, an 8x8 average pool and a linear classifier. Registered as
``wrn_16_2``, ``wrn_40_1`` and ``wrn_40_2``; module names match the benchmark's released checkpoints.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..init import init_weights
from ._shared import reject_options

__all__ = ['CifarWideResNet', 'wrn_16_2', 'wrn_40_1', 'wrn_40_2']


class _PreActBlock(nn.Module):
    """BN-ReLU-conv3x3 twice. When the width changes, the shortcut is a 1x1 conv of the pre-activated input."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.convShortcut = None  # the checkpoints' name for the projection
        if in_channels != out_channels:
            self.convShortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        activated = self.relu1(self.bn1(x))
        shortcut = x if self.convShortcut is None else self.convShortcut(activated)
        out = self.conv2(self.relu2(self.bn2(self.conv1(activated))))
        return shortcut + out


class _Stage(nn.Module):
    """``num_blocks`` pre-activation blocks; the first one changes width and stride."""

    def __init__(self, num_blocks: int, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(*(
            _PreActBlock(in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1)
            for i in range(num_blocks)))

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class CifarWideResNet(nn.Module):
    """WRN-``depth``-``widen_factor`` for 32x32 inputs."""

    def __init__(self, depth: int, widen_factor: int, num_classes: int = 100) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f'CifarWideResNet depth must be 6n+4, got {depth}')
        num_blocks = (depth - 4) // 6
        widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.block1 = _Stage(num_blocks, 16, widths[0], 1)
        self.block2 = _Stage(num_blocks, widths[0], widths[1], 2)
        self.block3 = _Stage(num_blocks, widths[1], widths[2], 2)
        self.bn1 = nn.BatchNorm2d(widths[2])
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(widths[2], num_classes)
        init_weights(self, zero_linear_bias=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(self.avgpool(self.relu(self.bn1(x))).flatten(1))


def wrn_16_2(num_classes: int = 100, **kwargs) -> CifarWideResNet:
    """WRN-16-2 (0.70 M parameters for 100 classes)."""
    reject_options('wrn_16_2', kwargs)
    return CifarWideResNet(16, 2, num_classes)


def wrn_40_1(num_classes: int = 100, **kwargs) -> CifarWideResNet:
    """WRN-40-1 (0.57 M parameters for 100 classes)."""
    reject_options('wrn_40_1', kwargs)
    return CifarWideResNet(40, 1, num_classes)


def wrn_40_2(num_classes: int = 100, **kwargs) -> CifarWideResNet:
    """WRN-40-2 (2.26 M parameters for 100 classes), a teacher of the benchmark."""
    reject_options('wrn_40_2', kwargs)
    return CifarWideResNet(40, 2, num_classes)
