"""MobileNet v1 (Howard et al. 2017, arXiv 1704.04861), registered as ``mobilenet_v1``.

Width multiplier 1.0 at 224x224: 4,231,976 parameters for 1000 classes, about 569 M
multiply-adds. Neither torchvision nor torchdistill ships it; the paper's ImageNet
ResNet-50 -> MobileNet experiment (Table 5) uses it as the student.
"""
from __future__ import annotations

from torch import Tensor, nn
from torchdistill.models.registry import register_model

from .init import init_weights

__all__ = ['MobileNetV1', 'mobilenet_v1']

# (output channels, stride) of the 13 depthwise-separable blocks (Table 1 of Howard et al.).
_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
           (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class MobileNetV1(nn.Module):
    """A 3x3 stem convolution, 13 depthwise-separable blocks, global average pooling and a linear classifier."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.0) -> None:
        super().__init__()
        channels = int(32 * width_mult)
        layers = [_conv_bn_relu(3, channels, 3, 2)]
        for out_channels, stride in _BLOCKS:
            out_channels = int(out_channels * width_mult)
            layers.append(nn.Sequential(
                _conv_bn_relu(channels, channels, 3, stride, groups=channels),  # depthwise
                _conv_bn_relu(channels, out_channels, 1, 1),  # pointwise
            ))
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, num_classes))
        init_weights(self, linear_std=0.01)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.avgpool(self.features(x)).flatten(1))


@register_model
def mobilenet_v1(num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.0, **kwargs) -> MobileNetV1:
    """Build MobileNet v1; ``key: 'mobilenet_v1'`` in a recipe. Extra kwargs (e.g. ``weights: null``) must be None."""
    unexpected = {k: v for k, v in kwargs.items() if v is not None}
    if unexpected:
        raise ValueError(f'mobilenet_v1 has no pretrained weights or option for {sorted(unexpected)}')
    return MobileNetV1(num_classes=num_classes, width_mult=width_mult, dropout=dropout)
