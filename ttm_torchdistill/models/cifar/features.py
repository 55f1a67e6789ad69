"""Where torchdistill's forward hooks catch the CRD benchmark's feature list in each of the 15 CIFAR-100 models.

The benchmark's models return, from ``forward(x, is_feat=True, preact=False)``, a list of intermediate features
next to the logits; its training script distils entry 2 (FitNet's hint), entries 1 to -2 (AT and VID, paired in
order and cut to the shorter list) and entry -1, the flattened pooled embedding (RKD, PKT, CRD). Entry 0 is used
by none of them and is listed for completeness.

:data:`FEATURE_LISTS` gives, per registry key, one :class:`FeatureTap` per entry: the module whose ``'input'`` or
``'output'`` a torchdistill ``forward_hook`` list catches (``'model.' + path`` behind an auxiliary wrapper) and
the feature's channels and spatial size for a 32x32 input. Each hooked tensor is exactly the benchmark's entry
after the whole forward (tests/test_feature_taps.py checks it bit for bit, in train and eval mode): no tapped
module runs twice in a forward, and nothing later changes a tapped tensor in place.

Choices, by family:

- an entry that some module returns is that module's ``'output'``; one made by a functional call inside
  ``forward`` (the stem's ``torch.relu`` of the ShuffleNets and ResNet-50, VGG's ReLU after each stage) is the
  ``'input'`` of the module that reads it next;
- the wide ResNets' stage entries are the stages' outputs, before the final BN-ReLU (pre-activation blocks);
- VGG's entry 3 is ``block4``'s input, which is the ReLU of ``block3`` only for 32x32 inputs (a 64x64 input
  goes through ``pool3`` in between);
- the embedding (entry -1) is the classifier's ``'input'`` in all 15 models: each of them flattens the pooled
  map and feeds it to the linear layer unchanged, so the tensor is already 2-D ``(N, C)``, as RKD and PKT read it.
  Its ``size`` is 1.
"""
from __future__ import annotations

from ...methods import FeatureTap, ModelFeatures

__all__ = ['FEATURES', 'FEATURE_LISTS', 'FeatureTap', 'feature_list', 'model_features']

# Registry key -> (path of the pooled-feature module inside the model, flattened feature size), for all
# 15 CIFAR models of the benchmark, torchdistill's resnet20/32/56/110 included.
FEATURES: dict[str, tuple[str, int]] = {
    'resnet20': ('avgpool', 64),
    'resnet32': ('avgpool', 64),
    'resnet56': ('avgpool', 64),
    'resnet110': ('avgpool', 64),
    'resnet8x4': ('avgpool', 256),
    'resnet32x4': ('avgpool', 256),
    'wrn_16_2': ('avgpool', 128),
    'wrn_40_1': ('avgpool', 64),
    'wrn_40_2': ('avgpool', 128),
    'vgg8_cifar': ('pool4', 512),
    'vgg13_cifar': ('pool4', 512),
    'mobilenetv2_cifar': ('avgpool', 1280),
    'shufflenetv1_cifar': ('avgpool', 960),
    'shufflenetv2_cifar': ('avgpool', 1024),
    'resnet50_cifar': ('avgpool', 2048),
}


def _out(path: str, channels: int, size: int) -> FeatureTap:
    return FeatureTap(path, 'output', channels, size)


def _in(path: str, channels: int, size: int) -> FeatureTap:
    return FeatureTap(path, 'input', channels, size)


def _basic_resnet(stem: int, widths: tuple[int, int, int]) -> tuple[FeatureTap, ...]:
    """CIFAR ResNets with basic blocks (ours and torchdistill's): the stem's ReLU module, three stages, ``fc``."""
    return (_out('relu', stem, 32), _out('layer1', widths[0], 32), _out('layer2', widths[1], 16),
            _out('layer3', widths[2], 8), _in('fc', widths[2], 1))


def _wide_resnet(widen_factor: int) -> tuple[FeatureTap, ...]:
    widths = (16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
    return (_out('conv1', 16, 32), _out('block1', widths[0], 32), _out('block2', widths[1], 16),
            _out('block3', widths[2], 8), _in('fc', widths[2], 1))


def _shufflenet(stages: tuple[int, int, int], embedding: int) -> tuple[FeatureTap, ...]:
    return (_in('layer1', 24, 32), _out('layer1', stages[0], 16), _out('layer2', stages[1], 8),
            _out('layer3', stages[2], 4), _in('linear', embedding, 1))


_VGG = (_in('pool0', 64, 32), _in('pool1', 128, 16), _in('pool2', 256, 8), _in('block4', 512, 4),
        _in('pool4', 512, 4), _in('classifier', 512, 1))
_SMALL_RESNET = _basic_resnet(16, (16, 32, 64))

FEATURE_LISTS: dict[str, tuple[FeatureTap, ...]] = {
    'resnet20': _SMALL_RESNET,
    'resnet32': _SMALL_RESNET,
    'resnet56': _SMALL_RESNET,
    'resnet110': _SMALL_RESNET,
    'resnet8x4': _basic_resnet(32, (64, 128, 256)),
    'resnet32x4': _basic_resnet(32, (64, 128, 256)),
    'wrn_16_2': _wide_resnet(2),
    'wrn_40_1': _wide_resnet(1),
    'wrn_40_2': _wide_resnet(2),
    'vgg8_cifar': _VGG,
    'vgg13_cifar': _VGG,
    'mobilenetv2_cifar': (_out('conv1', 16, 16), _out('blocks.1', 12, 16), _out('blocks.2', 16, 8),
                          _out('blocks.4', 48, 4), _out('blocks.6', 160, 2), _in('classifier', 1280, 1)),
    'shufflenetv1_cifar': _shufflenet((240, 480, 960), 960),
    'shufflenetv2_cifar': _shufflenet((116, 232, 464), 1024),
    'resnet50_cifar': (_in('layer1', 64, 32), _out('layer1', 256, 32), _out('layer2', 512, 16),
                       _out('layer3', 1024, 8), _out('layer4', 2048, 4), _in('linear', 2048, 1)),
}
"""registry key -> the benchmark's feature list (``preact=False``), entry by entry"""


def feature_list(key: str) -> tuple[FeatureTap, ...]:
    """The taps of all entries of ``key``'s feature list; ``ValueError`` for a key without one."""
    if key not in FEATURE_LISTS:
        raise ValueError(f'key={key!r}: no CRD feature list; expected one of {sorted(FEATURE_LISTS)}')
    return FEATURE_LISTS[key]


def model_features(key: str) -> ModelFeatures:
    """What a feature method may hook in ``key`` (its feature list and pooled map); ``ValueError`` for a key without
    a feature list."""
    path, size = FEATURES[key] if key in FEATURES else (None, 0)
    return ModelFeatures(feature_list(key), FeatureTap(path, 'output', size, 1))
