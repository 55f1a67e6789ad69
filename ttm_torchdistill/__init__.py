"""TTM and WTTM (Zheng & Yang, ICLR 2024) for torchdistill.

Importing this package registers ``TTMLoss``, ``WTTMLoss``, ``ITRDLoss`` and the rivals ``ExactDISTLoss`` and
``DKDLoss`` in torchdistill's mid-level loss registry, ITRD's student wrapper ``Linear4ITRD`` in its auxiliary
model wrappers, and ``mobilenet_v1`` and the CRD benchmark's CIFAR-100 models (``resnet8x4``, ``resnet32x4``,
``wrn_16_2``, ``wrn_40_1``, ``wrn_40_2``, ``vgg8_cifar``, ``vgg13_cifar``, ``mobilenetv2_cifar``,
``shufflenetv1_cifar``, ``shufflenetv2_cifar``, ``resnet50_cifar``; see :mod:`ttm_torchdistill.models.cifar`) in its
model registry; list it under ``dependencies`` in a recipe.
"""
from . import functional, optim, processes  # noqa: F401  (optim registers its optimizer and scheduler keys)
from .losses import DKDLoss, ExactDISTLoss, ITRDLoss, Linear4ITRD, TTMLoss, WTTMLoss
from .models import MobileNetV1, mobilenet_v1

__version__ = '0.1.0'
__all__ = ['DKDLoss', 'ExactDISTLoss', 'ITRDLoss', 'Linear4ITRD', 'MobileNetV1', 'TTMLoss', 'WTTMLoss', 'functional',
           'mobilenet_v1', 'processes']
