"""TTM and WTTM (Zheng & Yang, ICLR 2024) for torchdistill.

Importing this package registers ``TTMLoss`` and ``WTTMLoss`` in torchdistill's mid-level loss
registry and ``mobilenet_v1`` in its model registry; list it under ``dependencies`` in a recipe.
"""
from . import functional, processes
from .losses import TTMLoss, WTTMLoss
from .models import MobileNetV1, mobilenet_v1

__version__ = '0.1.0'
__all__ = ['MobileNetV1', 'TTMLoss', 'WTTMLoss', 'functional', 'mobilenet_v1', 'processes']
