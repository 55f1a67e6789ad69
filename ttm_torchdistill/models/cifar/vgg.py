"""VGG with batch norm for CIFAR as the CRD benchmark builds it: ``vgg8_cifar`` and ``vgg13_cifar``.

Five conv-BN stages (ReLU between convolutions, and after each stage), 2x2 max pools after the first three
stages, global average pooling and one linear layer on 512 features (no fully connected hidden layers).
Module names match the benchmark's released ``vgg8`` / ``vgg13`` checkpoints.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..init import init_weights
from ._shared import reject_options

__all__ = ['CifarVGG', 'vgg8_cifar', 'vgg13_cifar']

# Output channels of the 3x3 convolutions in each of the five stages.
_VGG8 = ((64,), (128,), (256,), (512,), (512,))
_VGG13 = ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512))


def _stage(in_channels: int, widths: tuple[int, ...]) -> nn.Sequential:
    """Conv-BN-ReLU per width, ending at the last BN (the model applies the stage's ReLU)."""
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        in_channels = width
    return nn.Sequential(*layers[:-1])


class CifarVGG(nn.Module):
    """VGG-BN over five stages of ``stages`` widths, for 32x32 inputs (64x64 inputs get a fourth max pool)."""

    def __init__(self, stages: tuple[tuple[int, ...], ...], num_classes: int = 100) -> None:
        super().__init__()
        in_channels = 3
        for index, widths in enumerate(stages):
            self.add_module(f'block{index}', _stage(in_channels, widths))
            in_channels = widths[-1]
        for index in range(4):
            self.add_module(f'pool{index}', nn.MaxPool2d(2, 2))
        self.pool4 = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_channels, num_classes)
        init_weights(self, linear_std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        downsample_block3 = x.shape[2] == 64  # as in the benchmark: pool3 is used only for 64x64 inputs
        x = self.pool0(torch.relu(self.block0(x)))
        x = self.pool1(torch.relu(self.block1(x)))
        x = self.pool2(torch.relu(self.block2(x)))
        x = torch.relu(self.block3(x))
        if downsample_block3:
            x = self.pool3(x)
        x = torch.relu(self.block4(x))
        return self.classifier(self.pool4(x).flatten(1))


def vgg8_cifar(num_classes: int = 100, **kwargs) -> CifarVGG:
    """VGG-8 with BN (3.97 M parameters for 100 classes); the benchmark's ``vgg8``."""
    reject_options('vgg8_cifar', kwargs)
    return CifarVGG(_VGG8, num_classes)


def vgg13_cifar(num_classes: int = 100, **kwargs) -> CifarVGG:
    """VGG-13 with BN (9.46 M parameters for 100 classes); the benchmark's ``vgg13`` teacher."""
    reject_options('vgg13_cifar', kwargs)
    return CifarVGG(_VGG13, num_classes)
