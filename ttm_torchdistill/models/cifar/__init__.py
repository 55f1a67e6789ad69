"""The CIFAR-100 architectures of the CRD benchmark (Tian et al. 2019), registered in torchdistill's model registry.

Module names, parameter shapes and forward computation follow the benchmark's code, so its released
teachers (``<model>_vanilla/ckpt_epoch_240.pth``, whose ``'model'`` entry is the state dict) load with
``strict=True`` and give the same logits. torchdistill's own ``resnet20/32/56/110`` are the benchmark's
small ResNets and are not redefined here.

:data:`FEATURES` (module :mod:`.features`) names, per registry key, the parameter-free module whose output is
the pooled penultimate feature and that feature's size: the ``input_module_path`` (``'model.' + path``) and
``in_features`` of torchdistill's ``Linear4CRD`` wrapper. :data:`FEATURE_LISTS` says where forward hooks catch each
entry of the benchmark's whole feature list (FitNet's hint, AT's and VID's maps, the embedding).
"""
from __future__ import annotations

from torchdistill.models.registry import register_model

from .features import FEATURE_LISTS, FEATURES, FeatureTap, feature_list, model_features
from .mobilenetv2 import CifarMobileNetV2, mobilenetv2_cifar
from .resnet import CifarResNet, resnet8x4, resnet32x4
from .resnetv2 import CifarResNet50, resnet50_cifar
from .shufflenetv1 import CifarShuffleNetV1, shufflenetv1_cifar
from .shufflenetv2 import CifarShuffleNetV2, shufflenetv2_cifar
from .vgg import CifarVGG, vgg8_cifar, vgg13_cifar
from .wrn import CifarWideResNet, wrn_16_2, wrn_40_1, wrn_40_2

__all__ = ['BUILDERS', 'FEATURES', 'FEATURE_LISTS', 'CifarMobileNetV2', 'CifarResNet', 'CifarResNet50',
           'CifarShuffleNetV1', 'CifarShuffleNetV2', 'CifarVGG', 'CifarWideResNet', 'FeatureTap', 'feature_list',
           'model_features', 'mobilenetv2_cifar',
           'resnet8x4', 'resnet32x4', 'resnet50_cifar', 'shufflenetv1_cifar', 'shufflenetv2_cifar', 'vgg8_cifar',
           'vgg13_cifar', 'wrn_16_2', 'wrn_40_1', 'wrn_40_2']

# Registry key -> builder, for the models this package adds.
BUILDERS = {
    'resnet8x4': resnet8x4,
    'resnet32x4': resnet32x4,
    'wrn_16_2': wrn_16_2,
    'wrn_40_1': wrn_40_1,
    'wrn_40_2': wrn_40_2,
    'vgg8_cifar': vgg8_cifar,
    'vgg13_cifar': vgg13_cifar,
    'mobilenetv2_cifar': mobilenetv2_cifar,
    'shufflenetv1_cifar': shufflenetv1_cifar,
    'shufflenetv2_cifar': shufflenetv2_cifar,
    'resnet50_cifar': resnet50_cifar,
}
for _key, _builder in BUILDERS.items():
    register_model(key=_key)(_builder)
