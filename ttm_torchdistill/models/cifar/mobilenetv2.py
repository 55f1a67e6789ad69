"""The CRD benchmark's half-width MobileNetV2 for CIFAR, registered as ``mobilenetv2_cifar``.

MobileNetV2 (Sandler et al. 2018) with width multiplier 0.5 and expansion 6, a stride-2 stem for 32x32
inputs, a 1280-channel 1x1 head, 2x2 average pooling and a linear classifier (the benchmark's
``mobile_half``). Module names match its released checkpoints.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..init import init_weights
from ._shared import reject_options

__all__ = ['CifarMobileNetV2', 'mobilenetv2_cifar']

# (expansion, output channels at width 1, blocks, stride of the first block); None: the model's expansion.
_SETTINGS = ((1, 16, 1, 1), (None, 24, 2, 1), (None, 32, 3, 2), (None, 64, 4, 2),
             (None, 96, 3, 1), (None, 160, 3, 2), (None, 320, 1, 1))
_HEAD_CHANNELS = 1280


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class _InvertedResidual(nn.Module):
    """1x1 expansion, 3x3 depthwise, 1x1 linear projection; identity shortcut when the shape is kept."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.use_shortcut = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_shortcut else self.conv(x)


class CifarMobileNetV2(nn.Module):
    """MobileNetV2 for 32x32 inputs: stride-2 stem, seven groups of inverted residuals, 1x1 head to 1280."""

    def __init__(self, num_classes: int = 100, width_mult: float = 0.5, expansion: int = 6) -> None:
        super().__init__()
        channels = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(3, channels, 3, 2)
        groups = []
        for block_expansion, width, num_blocks, stride in _SETTINGS:
            out_channels = int(width * width_mult)
            blocks = []
            for i in range(num_blocks):
                blocks.append(_InvertedResidual(channels, out_channels, stride if i == 0 else 1,
                                                block_expansion or expansion))
                channels = out_channels
            groups.append(nn.Sequential(*blocks))
        self.blocks = nn.ModuleList(groups)
        head = int(_HEAD_CHANNELS * width_mult) if width_mult > 1.0 else _HEAD_CHANNELS
        self.conv2 = _conv_bn_relu(channels, head, 1, 1)
        self.avgpool = nn.AvgPool2d(2, ceil_mode=True)
        self.classifier = nn.Sequential(nn.Linear(head, num_classes))
        init_weights(self, linear_std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        for group in self.blocks:
            x = group(x)
        return self.classifier(self.avgpool(self.conv2(x)).flatten(1))


def mobilenetv2_cifar(num_classes: int = 100, **kwargs) -> CifarMobileNetV2:
    """Half-width MobileNetV2 (0.81 M parameters for 100 classes); the benchmark's ``mobile_half``."""
    reject_options('mobilenetv2_cifar', kwargs)
    return CifarMobileNetV2(num_classes)
