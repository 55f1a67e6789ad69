"""The CRD benchmark's CIFAR-100 models through torchdistill's registry: sizes, gradients, compatibility with the
benchmark's released checkpoints (state-dict keys and shapes, golden logits from the reference code), load_ckpt,
and the CRD feature modules named in FEATURES.

tests/data/cifar_reference.json was generated once from the reference implementation (HobbitLong/RepDistiller,
models/) with :func:`fill_deterministic` and :func:`golden_input` below; it is data, not code from there.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn
from torchdistill.common.main_util import load_ckpt
from torchdistill.models.registry import MODEL_DICT, get_model

import ttm_torchdistill  # noqa: F401  (registers the models)
from ttm_torchdistill.models.cifar import BUILDERS, FEATURES

REFERENCE = Path(__file__).resolve().parent / 'data' / 'cifar_reference.json'
# Parameter counts with 100 classes (the benchmark's models; resnet20..110 are torchdistill's own).
PARAMS = {
    'resnet20': 278_324, 'resnet32': 472_756, 'resnet56': 861_620, 'resnet110': 1_736_564,
    'resnet8x4': 1_233_540, 'resnet32x4': 7_433_860, 'wrn_16_2': 703_284, 'wrn_40_1': 569_780,
    'wrn_40_2': 2_255_156, 'vgg8_cifar': 3_965_028, 'vgg13_cifar': 9_462_180, 'mobilenetv2_cifar': 812_836,
    'shufflenetv1_cifar': 949_258, 'shufflenetv2_cifar': 1_355_528, 'resnet50_cifar': 23_705_252,
}
KEYS = sorted(PARAMS)
_BN_TENSORS = ('bias', 'num_batches_tracked', 'running_mean', 'running_var', 'weight')
_PRIME = 2**31 - 1


def _values(numel: int, seed: int) -> torch.Tensor:
    """Values in [-1, 1) from a quadratic congruential formula of the element index (no RNG). Integer arithmetic
    is exact, so they are the same on every machine; a linear phase such as sin(0.37 i + k) would instead make
    every weight matrix rank 2 and wash the input out of the logits."""
    i = torch.arange(numel, dtype=torch.int64)
    h = (i * i % _PRIME * 1_103_515_245 + i * 2_654_435_761 + seed * 40_692 + 12_345) % _PRIME
    return (h.double() / _PRIME * 2 - 1).float()


def golden_input() -> torch.Tensor:
    """Four deterministic 32x32 RGB images."""
    return _values(4 * 3 * 32 * 32, 10**6).view(4, 3, 32, 32)


@torch.no_grad()
def fill_deterministic(model: nn.Module) -> nn.Module:
    """Set every parameter from :func:`_values` (the k-th tensor in sorted key order with seed k): conv and linear
    weights with variance 1/fan-in, BN scales 1 +- 0.2, biases +- 0.1. BN running statistics become those of
    :func:`golden_input` (one train-mode pass with momentum 1), each variance raised by a tenth of its layer's mean
    so that no channel divides by a near-zero variance. Returns the model in eval mode."""
    for k, (name, tensor) in enumerate(sorted(model.state_dict().items())):
        leaf = name.rsplit('.', 1)[-1]
        if leaf in ('running_mean', 'running_var', 'num_batches_tracked'):
            continue
        values = _values(tensor.numel(), k).view_as(tensor)
        if leaf == 'bias':
            tensor.copy_(0.1 * values)
        elif tensor.dim() == 1:  # BN scale
            tensor.copy_(1.0 + 0.2 * values)
        else:
            tensor.copy_(values * math.sqrt(3.0 / tensor[0].numel()))
    norms = [module for module in model.modules() if isinstance(module, nn.BatchNorm2d)]
    for norm in norms:
        norm.momentum = 1.0
    model.train()(golden_input())
    for norm in norms:
        norm.momentum = 0.1
        norm.running_var.add_(0.1 * norm.running_var.mean())
    return model.eval()


def encode_state_dict(state_dict: dict) -> dict:
    """Nest the keys by '.', leaves being shape lists; a BatchNorm's five tensors collapse to its channel count."""
    tree: dict = {}
    for name, tensor in state_dict.items():
        *parents, leaf = name.split('.')
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = list(tensor.shape)

    def collapse(node: dict):
        if sorted(node) == list(_BN_TENSORS) and node['num_batches_tracked'] == [] and \
                all(node[t] == node['weight'] and len(node[t]) == 1 for t in _BN_TENSORS if t != 'num_batches_tracked'):
            return node['weight'][0]
        return {key: collapse(child) if isinstance(child, dict) else child for key, child in node.items()}

    return collapse(tree)


def expand_state_dict(tree: dict, prefix: str = '') -> dict[str, list[int]]:
    """Inverse of :func:`encode_state_dict`: state-dict key -> shape."""
    shapes: dict[str, list[int]] = {}
    for key, child in tree.items():
        if isinstance(child, int):  # BatchNorm with `child` channels
            shapes.update({f'{prefix}{key}.{t}': [] if t == 'num_batches_tracked' else [child] for t in _BN_TENSORS})
        elif isinstance(child, dict):
            shapes.update(expand_state_dict(child, f'{prefix}{key}.'))
        else:
            shapes[f'{prefix}{key}'] = child
    return shapes


@pytest.fixture(scope='module', autouse=True)
def _one_thread():
    """Small convolutions run fastest on one thread; on a loaded 2-core machine, two threads spin and wait."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def reference() -> dict:
    return json.loads(REFERENCE.read_text())


def test_registry_has_exactly_the_builders():
    assert set(FEATURES) == set(PARAMS)
    assert set(BUILDERS) == set(PARAMS) - {'resnet20', 'resnet32', 'resnet56', 'resnet110'}
    for key, builder in BUILDERS.items():
        assert MODEL_DICT[key] is builder


@pytest.mark.parametrize('key', KEYS)
def test_size_output_and_gradients(key):
    torch.manual_seed(0)
    model = get_model(key, num_classes=100)
    assert sum(p.numel() for p in model.parameters()) == PARAMS[key]
    model.train()
    logits = model(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 100)
    nn.functional.cross_entropy(logits, torch.tensor([3, 97])).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
    assert any(param.grad.abs().sum() > 0 for param in model.parameters())


@pytest.mark.parametrize('key', KEYS)
def test_num_classes_sets_the_head(key):
    model = get_model(key, num_classes=10).eval()
    feature_size = FEATURES[key][1]
    assert sum(p.numel() for p in model.parameters()) == PARAMS[key] - 90 * (feature_size + 1)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize('key', KEYS)
def test_state_dict_matches_released_checkpoints(key, reference):
    state_dict = get_model(key, num_classes=100).state_dict()
    ours = {name: list(tensor.shape) for name, tensor in state_dict.items()}
    assert expand_state_dict(encode_state_dict(state_dict)) == ours  # the file's encoding is lossless
    expected = expand_state_dict(reference['models'][key]['state_dict'])
    assert sorted(ours.items()) == sorted(expected.items())


@pytest.mark.parametrize('key', KEYS)
def test_golden_logits_of_the_reference(key, reference):
    model = fill_deterministic(get_model(key, num_classes=100))
    with torch.no_grad():
        logits = model(golden_input())
    classes = reference['logit_classes']
    expected = torch.tensor(reference['models'][key]['logits'])
    assert expected.abs().max() > 0.1  # the stored logits are not trivially small
    torch.testing.assert_close(logits[:, classes], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('key', KEYS)
def test_load_ckpt_strict(key, tmp_path):
    source = fill_deterministic(get_model(key, num_classes=100))
    path = tmp_path / 'ckpt_epoch_240.pth'
    torch.save({'model': source.state_dict(), 'epoch': 240}, path)
    torch.manual_seed(1)
    target = get_model(key, num_classes=100).eval()
    load_ckpt(str(path), model=target, strict=True)
    for (name, a), (_, b) in zip(source.state_dict().items(), target.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    with torch.no_grad():
        torch.testing.assert_close(target(golden_input()), source(golden_input()), rtol=0, atol=0)


def test_load_ckpt_strict_rejects_a_foreign_state_dict(tmp_path):
    path = tmp_path / 'ckpt_epoch_240.pth'
    torch.save({'model': get_model('wrn_40_1').state_dict(), 'epoch': 240}, path)
    with pytest.raises(RuntimeError, match='Missing key'):
        load_ckpt(str(path), model=get_model('wrn_16_2'), strict=True)


@pytest.mark.parametrize('key', KEYS)
def test_crd_feature_module(key):
    path, size = FEATURES[key]
    model = get_model(key, num_classes=100).eval()
    module = model.get_submodule(path)
    assert list(module.parameters()) == [] and list(module.buffers()) == []
    captured = []
    module.register_forward_hook(lambda _module, _inputs, output: captured.append(output.flatten(1)))
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
    assert len(captured) == 1 and captured[0].shape == (2, size)
    head = model.fc if hasattr(model, 'fc') else model.linear if hasattr(model, 'linear') else model.classifier
    head = head[-1] if isinstance(head, nn.Sequential) else head
    torch.testing.assert_close(head(captured[0]), logits)  # the hooked feature is what the classifier reads


@pytest.mark.parametrize('value', [None, False])
def test_unset_options_are_accepted(value):
    assert get_model('resnet8x4', num_classes=100, pretrained=value)(torch.randn(1, 3, 32, 32)).shape == (1, 100)


@pytest.mark.parametrize('key', sorted(BUILDERS))
def test_set_options_are_refused(key):
    with pytest.raises(ValueError, match=rf"^{key} takes only num_classes .*\['pretrained'\]"):
        get_model(key, num_classes=100, pretrained=True)
