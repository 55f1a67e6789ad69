"""TTM and WTTM (Zheng & Yang, ICLR 2024) for torchdistill.

Importing this package registers ``TTMLoss``, ``WTTMLoss``, ``ITRDLoss``, the logit-based rivals ``ExactDISTLoss`` and
``DKDLoss`` and the feature-based rivals ``HintLoss`` (FitNet), ``ExactATLoss`` and ``ExactVIDLoss`` in torchdistill's
mid-level loss registry (RKD and PKT use torchdistill's own ``RKDLoss`` and ``PKTLoss``), the student wrappers
``Linear4ITRD``, ``Regressor4FitNet`` and ``Regressors4ExactVID`` in its auxiliary model wrappers, and
``mobilenet_v1`` and the CRD benchmark's CIFAR-100 models (``resnet8x4``, ``resnet32x4``, ``wrn_16_2``, ``wrn_40_1``,
``wrn_40_2``, ``vgg8_cifar``, ``vgg13_cifar``, ``mobilenetv2_cifar``, ``shufflenetv1_cifar``, ``shufflenetv2_cifar``,
``resnet50_cifar``; see :mod:`ttm_torchdistill.models.cifar`) in its model registry; list it under ``dependencies``
in a recipe.
"""
from . import functional, optim, processes  # noqa: F401  (optim registers its optimizer and scheduler keys)
from .losses import (
    DKDLoss,
    ExactATLoss,
    ExactDISTLoss,
    ExactVIDLoss,
    HintLoss,
    ITRDLoss,
    Linear4ITRD,
    Regressor4FitNet,
    Regressors4ExactVID,
    TTMLoss,
    WTTMLoss,
)
from .models import MobileNetV1, mobilenet_v1

__version__ = '0.1.0'
__all__ = ['DKDLoss', 'ExactATLoss', 'ExactDISTLoss', 'ExactVIDLoss', 'HintLoss', 'ITRDLoss', 'Linear4ITRD',
           'MobileNetV1', 'Regressor4FitNet', 'Regressors4ExactVID', 'TTMLoss', 'WTTMLoss', 'functional',
           'mobilenet_v1', 'processes']
