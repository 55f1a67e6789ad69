"""TTMLoss / WTTMLoss through torchdistill's registries."""
import math

import pytest
import torch
import torchvision
import yaml
from torchdistill.losses.high_level import WeightedSumLoss
from torchdistill.losses.mid_level import KDLoss
from torchdistill.losses.registry import get_high_level_loss, get_mid_level_loss

import ttm_torchdistill  # noqa: F401  (registers the losses)
from ttm_torchdistill import TTMLoss, WTTMLoss
from ttm_torchdistill import functional as F

SNIPPET = """
key: 'WeightedSumLoss'
kwargs:
  sub_terms:
    distill:
      criterion:
        key: '{key}'
        kwargs:
          student_module_path: '.'
          student_module_io: 'output'
          teacher_module_path: '.'
          teacher_module_io: 'output'
          gamma: 0.8
          beta: 1.6
          alpha: 1.0
          reduction: 'batchmean'
      weight: 1.0
"""


def _io(logits):
    return {'.': {'output': logits}}


@pytest.mark.parametrize('key', ['TTMLoss', 'WTTMLoss'])
def test_yaml_snippet_in_weighted_sum_backprops_into_torchvision_model(key):
    criterion = get_high_level_loss(yaml.safe_load(SNIPPET.format(key=key)))
    assert isinstance(criterion, WeightedSumLoss)
    loss_module, weight = criterion.term_dict['distill']
    assert type(loss_module).__name__ == key and weight == 1.0
    torch.manual_seed(0)
    student = torchvision.models.resnet18(num_classes=10)
    teacher = torchvision.models.resnet18(num_classes=10).eval()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    with torch.no_grad():
        t_out = teacher(x)
    s_out = student(x)
    loss = criterion({'student': _io(s_out), 'teacher': _io(t_out)}, {}, y)
    fn = F.wttm_loss if key == 'WTTMLoss' else F.ttm_loss
    torch.testing.assert_close(loss, fn(s_out, t_out, y, 0.8, alpha=1.0, beta=1.6))
    loss.backward()
    grads = [p.grad for p in student.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in teacher.parameters())


def test_get_mid_level_loss_builds_both_keys():
    for key, cls in (('TTMLoss', TTMLoss), ('WTTMLoss', WTTMLoss)):
        loss = get_mid_level_loss({'key': key, 'kwargs': {'temperature': 2.0, 'beta': 3.0}})
        assert type(loss) is cls and loss.gamma == 0.5 and loss.beta == 3.0 and loss.alpha == 1.0
        assert loss.reduction == 'batchmean'


def test_gamma_one_matches_kdloss_soft_term_and_wttm_equals_ttm():
    torch.manual_seed(1)
    z, v = 4 * torch.randn(32, 100), 4 * torch.randn(32, 100)
    kd = KDLoss('.', 'output', '.', 'output', temperature=1.0, alpha=0.0, reduction='batchmean')
    ttm = TTMLoss(gamma=1.0, alpha=0.0, beta=1.0)
    wttm = WTTMLoss(gamma=1.0, alpha=0.0, beta=1.0)
    expected = kd(_io(z), _io(v), None)
    torch.testing.assert_close(ttm(_io(z), _io(v), None), expected)
    torch.testing.assert_close(wttm(_io(z), _io(v), None), expected)
    assert wttm.last_parts['u_gamma'] == pytest.approx(1.0)


def test_alpha_zero_works_without_targets():
    z, v = torch.randn(8, 10), torch.randn(8, 10)
    loss_fn = WTTMLoss(gamma=0.5, alpha=0)
    loss = loss_fn(_io(z), _io(v), None)
    torch.testing.assert_close(loss, F.wttm_loss(z, v, None, 0.5, alpha=0.0))
    assert math.isnan(loss_fn.last_parts['cross_entropy'])
    assert loss_fn.last_parts['distill'] == pytest.approx(loss.item(), rel=1e-6)


def test_last_parts_match_the_forward():
    torch.manual_seed(2)
    z, v, y = torch.randn(16, 10), torch.randn(16, 10), torch.randint(0, 10, (16,))
    loss_fn = WTTMLoss(gamma=0.7, beta=2.0, alpha=0.5)
    assert loss_fn.last_parts == {}
    loss = loss_fn(_io(z), _io(v), y)
    parts = loss_fn.last_parts
    assert parts['cross_entropy'] == pytest.approx(torch.nn.functional.cross_entropy(z, y).item(), rel=1e-5)
    assert parts['u_gamma'] == pytest.approx(F.power_sum(v, 0.7).mean().item(), rel=1e-5)
    assert parts['divergence'] == pytest.approx(F.distill_terms(z, v, 0.7).divergence.mean().item(), rel=1e-5)
    assert parts['student_entropy'] == pytest.approx(F.shannon_entropy(z).mean().item(), rel=1e-5)
    assert loss.item() == pytest.approx(0.5 * parts['cross_entropy'] + 2.0 * parts['distill'], rel=1e-5)


@pytest.mark.parametrize('cls', [TTMLoss, WTTMLoss])
@pytest.mark.parametrize('scale', [1e2, 1e3, 1e4])
def test_extreme_logits_stay_finite(cls, scale):
    torch.manual_seed(3)
    z = (scale * torch.randn(8, 1000)).requires_grad_()
    v = scale * torch.randn(8, 1000)
    v[:, 0] = scale  # one-hot-like teacher
    y = torch.randint(0, 1000, (8,))
    loss = cls(gamma=0.7, beta=3.5)(_io(z), _io(v), y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_low_precision_inputs_are_computed_in_float32(dtype):
    torch.manual_seed(4)
    z32, v32, y = 5 * torch.randn(16, 100), 5 * torch.randn(16, 100), torch.randint(0, 100, (16,))
    z = z32.to(dtype).requires_grad_()
    loss = WTTMLoss(gamma=0.8, beta=1.6)(_io(z), _io(v32.to(dtype)), y)
    assert loss.dtype == torch.float32
    expected = F.wttm_loss(z.detach().float(), v32.to(dtype).float(), y, 0.8, beta=1.6)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert z.grad.dtype == dtype and torch.isfinite(z.grad).all()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        lin = torch.nn.Linear(100, 100)
        out = lin(z32)
        assert out.dtype == torch.bfloat16
        loss = WTTMLoss(gamma=0.8)(_io(out), _io(out.detach()), y)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


@pytest.mark.parametrize('kwargs, message', [
    (dict(gamma=0), r'gamma=0 is invalid: accepted range is a finite number > 0'),
    (dict(gamma=-0.5), r'gamma=-0.5 is invalid'),
    (dict(gamma=float('nan')), r'gamma=nan is invalid'),
    (dict(gamma=float('inf')), r'gamma=inf is invalid'),
    (dict(gamma='0.8'), r"gamma='0.8' is invalid"),
    (dict(gamma=True), r'gamma=True is invalid'),
    (dict(temperature=0), r'temperature=0 is invalid'),
    (dict(gamma=0.5, temperature=2.0), r'exactly one of gamma and temperature'),
    (dict(), r'exactly one of gamma and temperature'),
    (dict(gamma=0.5, alpha=-1), r'alpha=-1 is invalid: accepted range is a finite number >= 0'),
    (dict(gamma=0.5, beta=-0.1), r'beta=-0.1 is invalid'),
    (dict(gamma=0.5, beta=float('nan')), r'beta=nan is invalid'),
    (dict(gamma=0.5, reduction='mean'), r"reduction='mean' is invalid: accepted values are batchmean, sum, none"),
])
@pytest.mark.parametrize('cls', [TTMLoss, WTTMLoss])
def test_bad_hyperparameters_raise_at_construction(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


def test_shape_mismatch_raises_at_first_forward():
    loss = TTMLoss(gamma=0.5)
    with pytest.raises(ValueError, match=r'same shape, got \(4, 10\) and \(4, 100\)'):
        loss(_io(torch.randn(4, 10)), _io(torch.randn(4, 100)), torch.zeros(4, dtype=torch.long))


def test_reduction_none_returns_per_sample_values():
    z, v, y = torch.randn(5, 10), torch.randn(5, 10), torch.randint(0, 10, (5,))
    per_sample = WTTMLoss(gamma=0.5, reduction='none')(_io(z), _io(v), y)
    assert per_sample.shape == (5,)
    torch.testing.assert_close(per_sample.sum(), WTTMLoss(gamma=0.5, reduction='sum')(_io(z), _io(v), y))
