"""The weight initialisation the CNNs here share with their reference implementations."""
from __future__ import annotations

from torch import nn

__all__ = ['init_weights']


def init_weights(model: nn.Module, linear_std: float | None = None, zero_linear_bias: bool = False) -> None:
    """He-normal (fan_out) convolution weights and zero convolution biases, batch norm scale 1 and shift 0.

    Linear layers get N(0, ``linear_std``) weights when ``linear_std`` is given, and zero biases when
    ``linear_std`` or ``zero_linear_bias`` is given; otherwise they keep PyTorch's defaults.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode='fan_out', nonlinearity='relu')
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(module.weight, 0.0, linear_std)
            if linear_std is not None or zero_linear_bias:
                nn.init.zeros_(module.bias)
