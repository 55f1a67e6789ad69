"""DIST and DKD: the functional terms against float64 transcriptions of their authors' equations (values and gradients),
hand-derived values, torchdistill's DISTLoss where it differs, and the registered losses (parameters, autocast,
the DKD warm-up epoch by epoch)."""
import math

import pytest
import torch
import yaml
from torchdistill.losses.mid_level import DISTLoss
from torchdistill.losses.registry import get_high_level_loss, get_mid_level_loss

import ttm_torchdistill  # noqa: F401  (registers the losses)
from ttm_torchdistill import DKDLoss, ExactDISTLoss
from ttm_torchdistill import functional as F
from ttm_torchdistill.processes import pre_epoch_process_with_frozen_teacher, tell_epoch


def _softmax_rows(x):
    rows = []
    for row in x:
        e = [math.exp(float(v - row.max())) for v in row]
        rows.append([v / sum(e) for v in e])
    return torch.tensor(rows, dtype=torch.float64)


def _dist_reference(z_s, z_t, beta, gamma, tau, eps=1e-8):
    """DIST in float64, sums written out (NOTES.md): tau^2 (beta (1 - mean_b rho_b) + gamma (1 - mean_c rho_c))."""
    y_s, y_t = _softmax_rows(z_s / tau), _softmax_rows(z_t / tau)

    def mean_pearson(a, b):
        total = 0.0
        for u, v in zip(a, b, strict=True):
            u, v = u - u.sum() / len(u), v - v.sum() / len(v)
            total += float((u * v).sum() / ((u * u).sum().sqrt() * (v * v).sum().sqrt() + eps))
        return total / len(a)

    inter = 1 - mean_pearson(y_s, y_t)
    intra = 1 - mean_pearson(y_s.T, y_t.T)
    return tau ** 2 * (beta * inter + gamma * intra), inter, intra


def _kl(p, q):
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True) if pi > 0)


def _dkd_reference(z_s, z_t, targets, temperature):
    """DKD's two terms in float64 (NOTES.md): per sample, the binary KL and the KL over the other classes."""
    p_s, p_t = _softmax_rows(z_s / temperature).tolist(), _softmax_rows(z_t / temperature).tolist()
    tckd = nckd = 0.0
    for ps, pt, y in zip(p_s, p_t, targets.tolist(), strict=True):
        tckd += _kl([pt[y], sum(pt) - pt[y]], [ps[y], sum(ps) - ps[y]])
        others_s = [v for j, v in enumerate(ps) if j != y]
        others_t = [v for j, v in enumerate(pt) if j != y]
        nckd += _kl([v / sum(others_t) for v in others_t], [v / sum(others_s) for v in others_s])
    scale = temperature ** 2 / len(targets)
    return tckd * scale, nckd * scale


def _logits(batch, classes, seed, teacher_scale):
    g = torch.Generator().manual_seed(seed)
    z_s = torch.randn(batch, classes, generator=g, dtype=torch.float64)
    z_t = teacher_scale * torch.randn(batch, classes, generator=g, dtype=torch.float64)
    targets = torch.randint(classes, (batch,), generator=g)
    return z_s, z_t, targets


CASES = [(8, 100, 0, 0.3), (8, 100, 1, 8.0), (6, 1000, 2, 0.3), (6, 1000, 3, 8.0)]
"""(batch, classes, seed, teacher scale): flat (0.3) and confident (8) teachers, 100 and 1000 classes"""


@pytest.mark.parametrize('tau', [1.0, 4.0])
@pytest.mark.parametrize('batch,classes,seed,scale', CASES)
def test_dist_equals_the_float64_transcription(batch, classes, seed, scale, tau):
    z_s, z_t, _ = _logits(batch, classes, seed, scale)
    expected, inter, intra = _dist_reference(z_s, z_t, 2.0, 3.0, tau)
    got_inter, got_intra = F.dist_terms(z_s, z_t, tau)
    assert got_inter.item() == pytest.approx(inter, rel=1e-9, abs=1e-12)
    assert got_intra.item() == pytest.approx(intra, rel=1e-9, abs=1e-12)
    assert F.dist_loss(z_s, z_t, beta=2.0, gamma=3.0, tau=tau).item() == pytest.approx(expected, rel=1e-9)
    # float32 inputs give the same value to float32 precision
    loss32 = F.dist_loss(z_s.float(), z_t.float(), beta=2.0, gamma=3.0, tau=tau)
    assert loss32.dtype == torch.float32 and loss32.item() == pytest.approx(expected, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize('tau', [1.0, 4.0])
@pytest.mark.parametrize('batch,classes,seed,scale', CASES[:2] + [(4, 1000, 3, 8.0)])
def test_dist_gradient_matches_finite_differences_of_the_transcription(batch, classes, seed, scale, tau):
    z_s, z_t, _ = _logits(batch, classes, seed, scale)
    z_s.requires_grad_(True)
    F.dist_loss(z_s, z_t, beta=2.0, gamma=3.0, tau=tau).backward()
    h = 1e-6
    for b, c in [(0, 0), (1, classes // 2), (batch - 1, classes - 1)]:
        up, down = z_s.detach().clone(), z_s.detach().clone()
        up[b, c] += h
        down[b, c] -= h
        numeric = (_dist_reference(up, z_t, 2.0, 3.0, tau)[0] - _dist_reference(down, z_t, 2.0, 3.0, tau)[0]) / (2 * h)
        assert z_s.grad[b, c].item() == pytest.approx(numeric, rel=1e-4, abs=1e-8)


def test_dist_hand_derived_values():
    same = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.0, 3.0]], dtype=torch.float64)
    inter, intra = F.dist_terms(same, same)  # 1 - mean of |a|^2 / (|a|^2 + eps) over rows (or columns)
    assert 0 < inter.item() < 1e-6
    y = torch.softmax(same, dim=1)
    norms = ((y - y.mean(dim=1, keepdim=True)) ** 2).sum(dim=1)
    assert inter.item() == pytest.approx(1 - (norms / (norms + 1e-8)).mean().item(), rel=1e-6)
    norms = ((y - y.mean(dim=0)) ** 2).sum(dim=0)
    assert intra.item() == pytest.approx(1 - (norms / (norms + 1e-8)).mean().item(), rel=1e-6)
    # two classes, student confident in the other class: each centred row is (a, -a) against (-b, b): rho = -1
    inter, _ = F.dist_terms(torch.tensor([[0.0, 3.0]]), torch.tensor([[3.0, 0.0]]))
    assert inter.item() == pytest.approx(2.0, abs=1e-6)
    # a batch of one: each class column centred over the batch is 0, so its cosine is 0 / (0 + eps) and intra is 1
    _, intra = F.dist_terms(torch.randn(1, 10), torch.randn(1, 10))
    assert intra.item() == 1.0
    inter, intra = F.dist_terms(same, same, tau=4.0)
    assert F.dist_loss(same, same, beta=2.0, gamma=3.0, tau=4.0).item() == pytest.approx(16 * (2 * inter + 3 * intra))


def test_dist_differs_from_torchdistills_distloss_only_in_intra_where_a_class_is_nearly_absent():
    """torchdistill's DISTLoss clamps each norm to eps; the authors add eps to their product. With tau 1, 1000 classes
    and a small batch, classes with tiny probability over the whole batch make the two intra terms differ."""
    g = torch.Generator().manual_seed(0)
    z_t = 8 * torch.randn(32, 1000, generator=g)  # a confident teacher, a student close to it
    z_s = z_t + 0.5 * torch.randn(32, 1000, generator=g)
    io = ({'.': {'output': z_s}}, {'.': {'output': z_t}})
    theirs = DISTLoss('.', 'output', '.', 'output', beta=1.0, gamma=0.0, tau=1.0)
    ours = ExactDISTLoss(beta=1.0, gamma=0.0, tau=1.0)
    assert ours(*io).item() == pytest.approx(theirs(*io).item(), rel=1e-5)  # inter: the same
    theirs_intra = DISTLoss('.', 'output', '.', 'output', beta=0.0, gamma=1.0, tau=1.0)(*io).item()
    ours_intra = ExactDISTLoss(beta=0.0, gamma=1.0, tau=1.0)(*io).item()
    assert ours_intra == pytest.approx(_dist_reference(z_s.double(), z_t.double(), 0.0, 1.0, 1.0)[0], rel=1e-3)
    assert ours_intra > 0.4 and theirs_intra < 0.1, (ours_intra, theirs_intra)
    # on moderate logits, where no class is nearly absent, both agree
    io = ({'.': {'output': torch.randn(32, 10, generator=g)}}, {'.': {'output': torch.randn(32, 10, generator=g)}})
    assert ExactDISTLoss(gamma=1.0)(*io).item() == pytest.approx(
        DISTLoss('.', 'output', '.', 'output', gamma=1.0)(*io).item(), rel=1e-5)


@pytest.mark.parametrize('temperature', [1.0, 4.0])
@pytest.mark.parametrize('batch,classes,seed,scale', CASES)
def test_dkd_terms_equal_the_float64_transcription(batch, classes, seed, scale, temperature):
    z_s, z_t, targets = _logits(batch, classes, seed, scale)
    tckd, nckd = F.dkd_terms(z_s, z_t, targets, temperature)
    ref_tckd, ref_nckd = _dkd_reference(z_s, z_t, targets, temperature)
    assert tckd.item() == pytest.approx(ref_tckd, rel=1e-8, abs=1e-12)
    assert nckd.item() == pytest.approx(ref_nckd, rel=1e-8, abs=1e-12)
    t32, n32 = F.dkd_terms(z_s.float(), z_t.float(), targets, temperature)
    assert t32.dtype == torch.float32
    assert t32.item() == pytest.approx(ref_tckd, rel=1e-3, abs=1e-5)
    assert n32.item() == pytest.approx(ref_nckd, rel=1e-3, abs=1e-5)


@pytest.mark.parametrize('temperature', [1.0, 4.0])
@pytest.mark.parametrize('batch,classes,seed,scale', CASES[:2] + [(4, 1000, 3, 8.0)])
def test_dkd_gradient_matches_finite_differences_of_the_transcription(batch, classes, seed, scale, temperature):
    z_s, z_t, targets = _logits(batch, classes, seed, scale)
    z_s.requires_grad_(True)
    tckd, nckd = F.dkd_terms(z_s, z_t, targets, temperature)
    (1.0 * tckd + 8.0 * nckd).backward()
    h = 1e-6

    def loss(z):
        t, n = _dkd_reference(z, z_t, targets, temperature)
        return t + 8.0 * n

    for b, c in [(0, int(targets[0])), (1, (int(targets[1]) + 1) % classes), (batch - 1, classes - 1)]:
        up, down = z_s.detach().clone(), z_s.detach().clone()
        up[b, c] += h
        down[b, c] -= h
        assert z_s.grad[b, c].item() == pytest.approx((loss(up) - loss(down)) / (2 * h), rel=1e-4, abs=1e-8)


def test_dkd_hand_derived_values():
    same = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 3.0]])
    tckd, nckd = F.dkd_terms(same, same, torch.tensor([0, 2]), 4.0)
    assert tckd.item() == pytest.approx(0.0, abs=1e-6) and nckd.item() == pytest.approx(0.0, abs=1e-6)
    # two classes at T = 1: the non-target distribution is one class (NCKD 0), TCKD the KL of the two binaries
    tckd, nckd = F.dkd_terms(torch.zeros(1, 2), torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([0]), 1.0)
    assert tckd.item() == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5), rel=1e-6)
    assert nckd.item() == pytest.approx(0.0, abs=1e-7)
    # T^2 scaling: at T = 2 with logits doubled, the same distributions, four times the terms
    z_s, z_t = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3])
    one, two = F.dkd_terms(z_s, z_t, y, 1.0), F.dkd_terms(2 * z_s, 2 * z_t, y, 2.0)
    assert two[0].item() == pytest.approx(4 * one[0].item()) and two[1].item() == pytest.approx(4 * one[1].item())


def test_dkd_needs_class_indices():
    with pytest.raises(ValueError, match='one class index per sample'):
        F.dkd_terms(torch.randn(2, 3), torch.randn(2, 3), torch.rand(2, 3), 4.0)
    with pytest.raises(ValueError, match=r'one shape \(B, C\)'):
        F.dkd_terms(torch.randn(2, 3), torch.randn(2, 4), torch.tensor([0, 1]), 4.0)


def _built(key: str, **kwargs):
    return get_mid_level_loss({'key': key, 'kwargs': kwargs})


@pytest.mark.parametrize('key,kwargs,message', [
    ('ExactDISTLoss', {'tau': 0}, 'ExactDISTLoss: tau=0 is invalid: accepted range is a finite number > 0'),
    ('ExactDISTLoss', {'beta': -1}, 'ExactDISTLoss: beta=-1 is invalid: accepted range is a finite number >= 0'),
    ('ExactDISTLoss', {'gamma': 'x'}, "ExactDISTLoss: gamma='x' is invalid"),
    ('ExactDISTLoss', {'eps': float('nan')}, 'ExactDISTLoss: eps=nan is invalid'),
    ('DKDLoss', {'temperature': -4}, 'DKDLoss: temperature=-4 is invalid: accepted range is a finite number > 0'),
    ('DKDLoss', {'alpha': float('inf')}, 'DKDLoss: alpha=inf is invalid'),
    ('DKDLoss', {'beta': -8}, 'DKDLoss: beta=-8 is invalid'),
    ('DKDLoss', {'warmup_epochs': -1}, 'DKDLoss: warmup_epochs=-1 is invalid: accepted range is a finite number >= 0'),
])
def test_parameters_are_checked_with_one_line(key, kwargs, message):
    with pytest.raises(ValueError) as info:
        _built(key, **kwargs)
    assert str(info.value).startswith(message) and '\n' not in str(info.value)


def test_the_registered_losses_compute_the_functional_terms_and_report_them():
    z_s, z_t, y = _logits(16, 100, 5, 3.0)
    io = ({'.': {'output': z_s.float()}}, {'.': {'output': z_t.float()}})
    dist = _built('ExactDISTLoss', beta=2.0, gamma=2.0, tau=4.0)
    assert dist(*io).item() == pytest.approx(_dist_reference(z_s, z_t, 2.0, 2.0, 4.0)[0], rel=1e-4)
    assert set(dist.last_parts) == {'inter', 'intra'}
    dkd = _built('DKDLoss', alpha=1.0, beta=8.0, temperature=4.0, warmup_epochs=0)
    tckd, nckd = _dkd_reference(z_s, z_t, y, 4.0)
    assert dkd(*io, y).item() == pytest.approx(tckd + 8 * nckd, rel=1e-4)
    assert dkd.last_parts['warmup'] == 1.0 and dkd.last_parts['tckd'] == pytest.approx(tckd, rel=1e-4)
    with pytest.raises(ValueError, match='DKDLoss: needs the labels'):
        dkd(*io)


@pytest.mark.parametrize('key,kwargs', [('ExactDISTLoss', {'tau': 4.0}), ('DKDLoss', {'warmup_epochs': 0})])
def test_float32_under_autocast(key, kwargs):
    z_s, z_t, y = _logits(8, 100, 6, 3.0)
    io = ({'.': {'output': z_s.to(torch.bfloat16)}}, {'.': {'output': z_t.to(torch.bfloat16)}})
    loss = _built(key, **kwargs)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        value = loss(*io, y)
    assert value.dtype == torch.float32
    rounded = [{'.': {'output': z.to(torch.bfloat16).float()}} for z in (z_s, z_t)]
    exact = loss(*rounded, y)
    assert value.item() == pytest.approx(exact.item(), rel=1e-6)


def test_the_dkd_warm_up_epoch_by_epoch():
    """w = min(e / warmup, 1), e counted from 1: torchdistill's epoch index 0 is e = 1 (1/20 with 20 epochs)."""
    z_s, z_t, y = _logits(8, 100, 7, 3.0)
    io = ({'.': {'output': z_s.float()}}, {'.': {'output': z_t.float()}})
    loss = DKDLoss(alpha=1.0, beta=8.0, temperature=4.0, warmup_epochs=20)
    with pytest.raises(ValueError, match="warmup_epochs=20 needs the epoch.*pre_epoch_process_with_frozen_teacher"):
        loss(*io, y)
    full = DKDLoss(alpha=1.0, beta=8.0, temperature=4.0, warmup_epochs=0)(*io, y).item()
    for index in range(25):
        loss.set_epoch(index)
        assert loss.warmup == min((index + 1) / 20, 1.0)
        assert loss(*io, y).item() == pytest.approx(min((index + 1) / 20, 1.0) * full, rel=1e-6)
    for no_warm_up in (0, 1):
        assert DKDLoss(warmup_epochs=no_warm_up).warmup == 1.0  # no epoch needed


def test_the_pre_epoch_process_tells_every_loss_term_the_epoch():
    config = yaml.safe_load("""
    key: WeightedSumLoss
    kwargs:
      sub_terms:
        ce: {criterion: {key: CrossEntropyLoss, kwargs: {}}, criterion_wrapper: {key: SimpleLossWrapper, kwargs:
             {input: {is_from_teacher: False, module_path: '.', io: output}, target: {uses_label: True}}}, weight: 1.0}
        dkd: {criterion: {key: DKDLoss, kwargs: {warmup_epochs: 20}}, weight: 1.0}
    """)
    criterion = get_high_level_loss(config)
    dkd = criterion.term_dict['dkd'][0]
    tell_epoch(criterion, 4)
    assert dkd.epoch == 5 and dkd.warmup == 0.25

    class Box:  # what the process touches of torchdistill's DistillationBox
        teacher_model = torch.nn.Linear(2, 2)
        student_model = torch.nn.Linear(2, 2)
        teacher_io_dict, student_io_dict, distributed = {}, {}, False

    box = Box()
    box.criterion = criterion
    box.teacher_model.train()
    pre_epoch_process_with_frozen_teacher(box, epoch=19)
    assert dkd.warmup == 1.0 and not box.teacher_model.training
