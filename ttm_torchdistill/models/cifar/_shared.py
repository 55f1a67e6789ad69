"""Helpers shared by the CIFAR model families: the builders' option check and the channel shuffle."""
from __future__ import annotations

from torch import Tensor


def reject_options(name: str, options: dict) -> None:
    """Raise ``ValueError`` for builder options other than ``num_classes`` that are set (None or False pass)."""
    given = sorted(key for key, value in options.items() if value is not None and value is not False)
    if given:
        raise ValueError(f'{name} takes only num_classes (no pretrained weights or other options); got {given}')


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave the channels of ``groups`` equal groups: (N, g*c, H, W) -> group-major to channel-major order."""
    n, channels, height, width = x.shape
    return x.view(n, groups, channels // groups, height, width).transpose(1, 2).reshape(n, channels, height, width)
