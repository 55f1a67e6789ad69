"""Models registered in torchdistill's model registry on import."""
from . import cifar
from .cifar import (
    mobilenetv2_cifar,
    resnet8x4,
    resnet32x4,
    resnet50_cifar,
    shufflenetv1_cifar,
    shufflenetv2_cifar,
    vgg8_cifar,
    vgg13_cifar,
    wrn_16_2,
    wrn_40_1,
    wrn_40_2,
)
from .digits import digits_cnn, digits_mlp
from .mobilenet_v1 import MobileNetV1, mobilenet_v1
from .timm_model import timm_model

__all__ = ['MobileNetV1', 'cifar', 'digits_cnn', 'digits_mlp', 'mobilenet_v1', 'mobilenetv2_cifar', 'resnet8x4',
           'resnet32x4', 'resnet50_cifar', 'shufflenetv1_cifar', 'shufflenetv2_cifar', 'timm_model', 'vgg8_cifar',
           'vgg13_cifar', 'wrn_16_2', 'wrn_40_1', 'wrn_40_2']
