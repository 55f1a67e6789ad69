"""Small networks for the 8x8 digits demo, registered in torchdistill's model registry."""
from __future__ import annotations

from torch import nn
from torchdistill.models.registry import register_model

__all__ = ['digits_cnn', 'digits_mlp']


@register_model
def digits_cnn(num_classes: int = 10, width: int = 32, **kwargs) -> nn.Sequential:
    """The demo's teacher: two 3x3 conv blocks (width, 2 * width channels) and a 2-layer head."""
    return nn.Sequential(
        nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
        nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * width * 16, 128), nn.ReLU(inplace=True), nn.Dropout(0.2),
        nn.Linear(128, num_classes),
    )


@register_model
def digits_mlp(num_classes: int = 10, hidden: int = 16, **kwargs) -> nn.Sequential:
    """The demo's student: a one-hidden-layer perceptron on the 64 pixels."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))
