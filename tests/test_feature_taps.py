"""FEATURE_LISTS against the CRD benchmark's feature lists: for each of the 15 CIFAR-100 models, what torchdistill's
forward hooks catch at the listed taps equals, bit for bit, the entries of a reference forward written here from
the benchmark's ``forward(x, is_feat=True, preact=False)`` (HobbitLong/RepDistiller, models/), in train and eval
mode; the pooled map whose flattening is the embedding; the pairing of AT's and VID's maps; FitNet's regressor
for the paper's pairs.

The reference forwards transcribe the benchmark's top-level sequence of operations onto our models' submodules,
cloning each entry when it is made, so that a later in-place change of a hooked tensor would show.
"""
from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from test_cifar_models import _one_thread, fill_deterministic  # noqa: F401  (_one_thread: autouse fixture)
from torch import Tensor, nn
from torchdistill.core.util import extract_io_dict, set_hooks
from torchdistill.models.registry import get_model

from ttm_torchdistill.losses.fitnet import hint_regressor
from ttm_torchdistill.methods import paired_maps
from ttm_torchdistill.models.cifar import FEATURE_LISTS, FEATURES, FeatureTap, feature_list, model_features
from ttm_torchdistill.paper.cifar100_table import PAIRS

Reference = Callable[[nn.Module, Tensor], tuple[list[Tensor], Tensor]]


def _basic_resnet(model: nn.Module, x: Tensor) -> tuple[list[Tensor], Tensor]:
    """models/resnet.py (resnet8x4, resnet32x4, and resnet20..110, which torchdistill's own models are)."""
    x = model.relu(model.bn1(model.conv1(x)))
    feats = [x.clone()]
    for stage in (model.layer1, model.layer2, model.layer3):
        x = stage(x)
        feats.append(x.clone())
    x = F.avg_pool2d(x, 8)
    x = x.view(x.size(0), -1)
    feats.append(x.clone())
    return feats, model.fc(x)


def _wide_resnet(model: nn.Module, x: Tensor) -> tuple[list[Tensor], Tensor]:
    """models/wrn.py: the stage outputs before the final BN-ReLU."""
    out = model.conv1(x)
    feats = [out.clone()]
    for stage in (model.block1, model.block2, model.block3):
        out = stage(out)
        feats.append(out.clone())
    out = F.avg_pool2d(model.relu(model.bn1(out)), 8)
    out = out.view(-1, model.fc.in_features)
    feats.append(out.clone())
    return feats, model.fc(out)


def _vgg(model: nn.Module, x: Tensor) -> tuple[list[Tensor], Tensor]:
    """models/vgg.py for a 32x32 input (no pool3)."""
    feats = []
    for index in range(5):
        x = F.relu(getattr(model, f'block{index}')(x))
        feats.append(x.clone())
        if index < 3:
            x = getattr(model, f'pool{index}')(x)
    x = F.adaptive_avg_pool2d(x, (1, 1))
    x = x.view(x.size(0), -1)
    feats.append(x.clone())
    return feats, model.classifier(x)


def _mobilenetv2(model: nn.Module, x: Tensor) -> tuple[list[Tensor], Tensor]:
    """models/mobilenetv2.py: entries after block groups 1, 2, 4 and 6."""
    out = model.conv1(x)
    feats = [out.clone()]
    for index, group in enumerate(model.blocks):
        out = group(out)
        if index in (1, 2, 4, 6):
            feats.append(out.clone())
    out = F.avg_pool2d(model.conv2(out), 2, ceil_mode=True)
    out = out.view(out.size(0), -1)
    feats.append(out.clone())
    return feats, model.classifier(out)


def _shufflenet(model: nn.Module, x: Tensor) -> tuple[list[Tensor], Tensor]:
    """models/ShuffleNetv1.py and ShuffleNetv2.py (v2 has a 1x1 conv-BN-ReLU head before the pool)."""
    out = F.relu(model.bn1(model.conv1(x)))
    feats = [out.clone()]
    for stage in (model.layer1, model.layer2, model.layer3):
        out = stage(out)
        feats.append(out.clone())
    if hasattr(model, 'conv2'):
        out = F.relu(model.bn2(model.conv2(out)))
    out = F.avg_pool2d(out, 4)
    out = out.view(out.size(0), -1)
    feats.append(out.clone())
    return feats, model.linear(out)


def _resnet50(model: nn.Module, x: Tensor) -> tuple[list[Tensor], Tensor]:
    """models/resnetv2.py."""
    out = F.relu(model.bn1(model.conv1(x)))
    feats = [out.clone()]
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        out = stage(out)
        feats.append(out.clone())
    out = F.adaptive_avg_pool2d(out, (1, 1))
    out = out.view(out.size(0), -1)
    feats.append(out.clone())
    return feats, model.linear(out)


REFERENCES: dict[str, Reference] = {
    **dict.fromkeys(('resnet20', 'resnet32', 'resnet56', 'resnet110', 'resnet8x4', 'resnet32x4'), _basic_resnet),
    **dict.fromkeys(('wrn_16_2', 'wrn_40_1', 'wrn_40_2'), _wide_resnet),
    **dict.fromkeys(('vgg8_cifar', 'vgg13_cifar'), _vgg),
    'mobilenetv2_cifar': _mobilenetv2,
    **dict.fromkeys(('shufflenetv1_cifar', 'shufflenetv2_cifar'), _shufflenet),
    'resnet50_cifar': _resnet50,
}


def _hooked_forward(model: nn.Module, taps: tuple[FeatureTap, ...], x: Tensor) -> tuple[list[Tensor], Tensor]:
    """The model's own forward with the taps as a recipe's ``forward_hook`` lists, through torchdistill's
    set_hooks / extract_io_dict as its DistillationBox calls them; each tapped module must run once."""
    config = {'forward_hook': {io: [tap.path for tap in taps if tap.io == io] for io in ('input', 'output')}}
    io_dict: dict = {}
    handles = [handle for _, handle in set_hooks(model, model, config, io_dict)]
    calls = {tap.path: 0 for tap in taps}
    for path in calls:
        handles.append(model.get_submodule(path).register_forward_hook(
            lambda *_, path=path: calls.__setitem__(path, calls[path] + 1)))
    try:
        logits = model(x)
    finally:
        for handle in handles:
            handle.remove()
    assert set(calls.values()) == {1}, calls
    extracted = extract_io_dict(io_dict, torch.device('cpu'))
    return [extracted[tap.path][tap.io] for tap in taps], logits


def test_every_model_has_a_feature_list():
    assert set(FEATURE_LISTS) == set(FEATURES) == set(REFERENCES)


@pytest.mark.parametrize('key', sorted(FEATURE_LISTS))
def test_taps_catch_the_benchmark_entries(key):
    torch.manual_seed(0)
    model = fill_deterministic(get_model(key, num_classes=100))
    taps = FEATURE_LISTS[key]
    x = torch.randn(3, 3, 32, 32)
    for training in (False, True):
        model.train(training)
        with torch.set_grad_enabled(training):  # a student forward (train) keeps the graph; a teacher's does not
            expected, reference_logits = REFERENCES[key](model, x)
            caught, logits = _hooked_forward(model, taps, x)
            plain_logits = model(x)
        assert len(expected) == len(taps)
        for index, (tap, want, got) in enumerate(zip(taps, expected, caught, strict=True)):
            assert torch.equal(got, want), f'{key} entry {index} ({tap}), training={training}'
            shape = (tap.channels,) if index == len(taps) - 1 else (tap.channels, tap.size, tap.size)
            assert tuple(got.shape) == (x.size(0), *shape), f'{key} entry {index}'
        assert taps[-1].size == 1 and taps[-1].channels == FEATURES[key][1]
        pooled = model_features(key).pooled  # RKD's: the module whose output, flattened, is the embedding
        caught_pooled, _ = _hooked_forward(model, [pooled], x)
        assert torch.equal(caught_pooled[0].flatten(1), expected[-1])
        assert torch.equal(logits, reference_logits) and torch.equal(plain_logits, logits)


def test_model_features_and_the_benchmarks_pairing():
    for key, taps in FEATURE_LISTS.items():
        features = model_features(key)
        assert feature_list(key) == features.entries == taps
        assert features.pooled == FeatureTap(FEATURES[key][0], 'output', FEATURES[key][1], 1)
        assert all(tap.size > 1 for tap in taps[1:-1])
    assert [len(FEATURE_LISTS[key]) - 2 for key in ('resnet20', 'wrn_40_2', 'vgg8_cifar', 'mobilenetv2_cifar',
                                                    'shufflenetv2_cifar', 'resnet50_cifar')] == [3, 3, 4, 4, 3, 4]
    teacher, student = paired_maps(model_features('resnet50_cifar'), model_features('shufflenetv1_cifar'))
    assert teacher == FEATURE_LISTS['resnet50_cifar'][1:4] and student == FEATURE_LISTS['shufflenetv1_cifar'][1:4]
    with pytest.raises(ValueError, match=r"^key='resnet18': no CRD feature list; expected one of \['mobilenetv2"):
        model_features('resnet18')
    with pytest.raises(ValueError, match=r"^FeatureTap io='both': expected 'input' or 'output'$"):
        FeatureTap('layer1', 'both', 16, 32)
    with pytest.raises(ValueError, match=r'^FeatureTap channels=16, size=0: both must be >= 1$'):
        FeatureTap('layer1', 'output', 16, 0)


# FitNet's regressor for the paper's 13 pairs: equal hint sizes (a 1x1 conv) within a family; the students of the
# different-architecture pairs hint at 8x8 where their teachers do at 16x16 (a transposed conv), except VGG-13's.
HINT_REGRESSORS = {
    ('wrn_40_2', 'wrn_16_2'): ('Conv2d', 1), ('wrn_40_2', 'wrn_40_1'): ('Conv2d', 1),
    ('resnet56', 'resnet20'): ('Conv2d', 1), ('resnet110', 'resnet20'): ('Conv2d', 1),
    ('resnet110', 'resnet32'): ('Conv2d', 1), ('resnet32x4', 'resnet8x4'): ('Conv2d', 1),
    ('vgg13_cifar', 'vgg8_cifar'): ('Conv2d', 1), ('vgg13_cifar', 'mobilenetv2_cifar'): ('Conv2d', 1),
    ('resnet50_cifar', 'mobilenetv2_cifar'): ('ConvTranspose2d', 4),
    ('resnet50_cifar', 'vgg8_cifar'): ('ConvTranspose2d', 4),
    ('resnet32x4', 'shufflenetv1_cifar'): ('ConvTranspose2d', 4),
    ('resnet32x4', 'shufflenetv2_cifar'): ('ConvTranspose2d', 4),
    ('wrn_40_2', 'shufflenetv1_cifar'): ('ConvTranspose2d', 4),
}


def test_hint_regressor_of_the_paper_pairs():
    found = {}
    for pair in PAIRS:
        s, t = FEATURE_LISTS[pair.student][2], FEATURE_LISTS[pair.teacher][2]
        conv = hint_regressor(s.channels, t.channels, s.size, t.size).conv
        found[(pair.teacher, pair.student)] = (type(conv).__name__, conv.kernel_size[0])
        assert conv(torch.zeros(1, s.channels, s.size, s.size)).shape == (1, t.channels, t.size, t.size)
    assert found == HINT_REGRESSORS
