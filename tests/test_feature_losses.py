"""The CRD benchmark's feature methods FitNet, AT, VID, RKD and PKT: the functional forms and the registered losses
against float64 transcriptions of the equations (tests/feature_refs.py; values and gradients, maps of different sizes
pooled both ways), and bit-for-bit equality with torchdistill's own classes where the methods use them or agree with
them."""
import numpy as np
import pytest
import torch
from feature_refs import assert_same_value_and_grads, at_ref, leaves, pkt_ref, pool_ref, randn, rkd_ref, vid_ref
from torch import nn
from torchdistill.losses.mid_level import ATLoss, PKTLoss, RKDLoss, VIDLoss
from torchdistill.models.wrapper import Regressor4VID

import ttm_torchdistill  # noqa: F401  (registers the losses)
from ttm_torchdistill import ExactATLoss, ExactVIDLoss, HintLoss
from ttm_torchdistill import functional as F
from ttm_torchdistill.losses.vid import VIDRegressor
from ttm_torchdistill.methods import method_named


def test_hint_loss_is_the_mean_squared_error_and_detaches_the_teacher():
    (r,), (r_ref,) = leaves(randn(3, 4, 5, 5, seed=1))
    t = randn(3, 4, 5, 5, seed=2).requires_grad_()
    got = F.hint_loss(r, t)
    assert_same_value_and_grads(got, ((r_ref - t) ** 2).sum() / r.numel(), [r], [r_ref])
    assert torch.autograd.grad(got, t, allow_unused=True)[0] is None
    with pytest.raises(ValueError, match=r'^hint_loss: the regressed student map \(3, 4, 5, 5\) and the teacher map '
                                         r'\(3, 4, 4, 4\) must have one shape$'):
        F.hint_loss(r, t[:, :, :4, :4])
    loss = HintLoss(teacher_module_path='layer2')
    assert torch.equal(loss({'regressor': {'output': r}}, {'layer2': {'output': t}}), got)
    with pytest.raises(ValueError, match=r"^HintLoss: the student's 'regressor' \(output\) has shape \(3, 4, 5, 5\), "
                                         r"the teacher's 'layer2' \(output\) \(3, 4, 4, 4\): set the regressor's "):
        loss({'regressor': {'output': r}}, {'layer2': {'output': t[:, :, :4, :4]}})


AT_SIZES = [  # (student's maps, teacher's maps): (C, H) per pair, pooled both ways, non-integer ratios included
    ([(4, 8), (6, 4)], [(5, 8), (3, 4)]),
    ([(4, 4), (6, 8)], [(5, 8), (3, 4)]),
    ([(2, 7), (3, 5)], [(2, 3), (4, 9)]),
]


@pytest.mark.parametrize('sizes', AT_SIZES)
@pytest.mark.parametrize('p', [2.0, 1.0, 3.0])
def test_at_value_and_gradient_equal_the_float64_equations(sizes, p):
    students = [randn(3, c, h, h, seed=10 + i) for i, (c, h) in enumerate(sizes[0])]
    teachers = [randn(3, c, h, h, seed=20 + i) for i, (c, h) in enumerate(sizes[1])]
    got_leaves, ref_leaves = leaves(*students)
    assert_same_value_and_grads(F.at_loss(got_leaves, teachers, p), at_ref(ref_leaves, teachers, p), got_leaves,
                                 ref_leaves)
    loss = ExactATLoss({f'pair{i}': {'student': {'io': 'output', 'path': f's{i}'},
                                     'teacher': {'io': 'input', 'path': f't{i}'}} for i in range(2)}, p=p)
    via_class = loss({f's{i}': {'output': f} for i, f in enumerate(got_leaves)},
                     {f't{i}': {'input': f} for i, f in enumerate(teachers)})
    assert torch.equal(via_class, F.at_loss(got_leaves, teachers, p))
    assert loss.last_parts == {f'pair{i}': term.item() for i, term in enumerate(F.at_terms(students, teachers, p))}


def test_at_refuses_non_square_maps_lists_of_other_lengths_and_bad_p():
    square, wide = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 6)
    with pytest.raises(ValueError, match=r'^pool_to_smaller: the teacher feature map must be square, of shape '
                                         r'\(B, C, H, H\), got \(2, 3, 4, 6\)$'):
        F.at_loss([square], [wide])
    with pytest.raises(ValueError, match='same length, got 2 and 1$'):
        F.at_loss([square, square], [square])
    with pytest.raises(ValueError, match=r'^at_terms: p=0 is invalid'):
        F.at_loss([square], [square], p=0)
    loss = ExactATLoss({'pair1': {'student': {'io': 'output', 'path': 'a'}, 'teacher': {'io': 'output', 'path': 'b'}}})
    with pytest.raises(ValueError, match=r'^ExactATLoss: at_pairs.pair1: pool_to_smaller: the teacher feature map'):
        loss({'a': {'output': square}}, {'b': {'output': wide}})
    with pytest.raises(ValueError, match=r"^ExactATLoss: at_pairs.pair1: the teacher's 'b' \(output\) was not "
                                         r"recorded: add 'b' to train.teacher.forward_hook.output$"):
        loss({'a': {'output': square}}, {})


@pytest.mark.parametrize('shape', [(3, 4, 5, 5), (2, 1, 3, 3)])
def test_vid_value_and_gradient_equal_the_float64_equations(shape):
    (mean, log_scale), (mean_ref, log_scale_ref) = leaves(randn(*shape, seed=3),
                                                           randn(shape[1], seed=4) + 2.0)
    target = randn(*shape, seed=5).requires_grad_()
    got = F.vid_loss(mean, log_scale, target, 1e-5)
    assert_same_value_and_grads(got, vid_ref(mean_ref, log_scale_ref, target, 1e-5), [mean, log_scale],
                                 [mean_ref, log_scale_ref])
    assert torch.autograd.grad(got, target, allow_unused=True)[0] is None
    with pytest.raises(ValueError, match=r'^vid_loss: expected pred_mean and target of one shape'):
        F.vid_loss(mean, log_scale[:1] if shape[1] > 1 else log_scale.repeat(2), target)


def test_vid_initial_variance_and_softplus_written_as_the_benchmark_writes_them():
    benchmark = np.log(np.exp(5.0 - 1e-5) - 1.0) * torch.ones(7)  # VIDLoss.__init__'s log_scale, float32
    ours = VIDRegressor(3, 4, 7, 2).log_scale.detach()
    assert ours.dtype == torch.float32 and torch.equal(ours, benchmark)
    variance = F.vid_variance(ours)
    assert torch.equal(variance, nn.functional.softplus(ours) + 1e-5)  # at the initial value softplus agrees
    torch.testing.assert_close(variance, torch.full((7,), 5.0))  # init_pred_var
    x = torch.linspace(-10, 15, 1001)
    literal = torch.log(1.0 + torch.exp(x)) + 1e-5
    assert torch.equal(F.vid_variance(x), literal)
    assert not torch.equal(nn.functional.softplus(x) + 1e-5, literal)  # why vid_variance does not use softplus


def _vid_regressor_ref(module, x):
    """The regressor written out in float64: pool the student map to out_size when larger, then three 1x1 convs."""
    if x.shape[2] > module.out_size:
        x = pool_ref(x, module.out_size)
    w = [module.regressor[i].weight[:, :, 0, 0] for i in (0, 2, 4)]
    h = torch.relu(torch.einsum('oc,bchw->bohw', w[0], x))
    h = torch.relu(torch.einsum('oc,bchw->bohw', w[1], h))
    return torch.einsum('oc,bchw->bohw', w[2], h)


def test_vid_pools_the_student_when_larger_and_the_teacher_when_larger():
    torch.manual_seed(0)
    regs = [VIDRegressor(3, 5, 4, 4).double(), VIDRegressor(2, 6, 6, 8).double()]  # (in, mid, out, out_size)
    x, x_ref = leaves(randn(2, 3, 8, 8, seed=6), randn(2, 2, 4, 4, seed=7))
    teachers = [randn(2, 4, 4, 4, seed=8), randn(2, 6, 8, 8, seed=9)]
    pairs = {f'pair{i}': {'student': {'io': 'output', 'path': f'regressors.{i}'},
                          'teacher': {'io': 'output', 'path': f't{i}'}} for i in range(2)}
    loss = ExactVIDLoss(pairs)
    got = loss({f'regressors.{i}': {'output': regs[i](x[i])} for i in range(2)},
               {f't{i}': {'output': t} for i, t in enumerate(teachers)})
    expected = (vid_ref(_vid_regressor_ref(regs[0], x_ref[0]), regs[0].log_scale, teachers[0], 1e-5)
                + vid_ref(_vid_regressor_ref(regs[1], x_ref[1]), regs[1].log_scale, pool_ref(teachers[1], 4), 1e-5))
    params = [regs[0].log_scale, regs[1].log_scale, regs[1].regressor[0].weight]
    assert_same_value_and_grads(got, expected, [*x, *params], [*x_ref, *params])
    assert list(loss.last_parts) == ['pair0', 'pair1']
    with pytest.raises(ValueError, match=r"^ExactVIDLoss: feature_pairs.pair1: the prediction \(2, 6, 4, 4\) is "
                                         r"larger than the teacher's map \(2, 6, 2, 2\): set the regressor's out_size"):
        loss({f'regressors.{i}': {'output': regs[i](x[i])} for i in range(2)},
             {'t0': {'output': teachers[0]}, 't1': {'output': teachers[1][:, :, :2, :2]}})


@pytest.mark.parametrize('batch, d_s, d_t', [(5, 4, 4), (6, 3, 7), (4, 9, 2)])
def test_rkd_value_and_gradient_equal_the_float64_equations(batch, d_s, d_t):
    (s,), (s_ref,) = leaves(randn(batch, d_s, 1, 1, seed=batch + d_s))
    t = randn(batch, d_t, seed=30 + d_t).relu().requires_grad_()
    got = F.rkd_loss(s, t)
    assert_same_value_and_grads(got, rkd_ref(s_ref, t, 25.0, 50.0), [s], [s_ref], rtol=1e-9)
    assert torch.autograd.grad(got, t, allow_unused=True)[0] is None
    distance, angle = F.rkd_terms(s, t)
    torch.testing.assert_close(F.rkd_loss(s, t, 2.0, 3.0), 2.0 * distance + 3.0 * angle)
    with pytest.raises(ValueError, match=r'^rkd_terms: expected student and teacher embeddings \(B, \.\.\.\) of one '
                                         r'batch size B >= 2, got \(1, 4\) and \(1, 4\)$'):
        F.rkd_loss(torch.ones(1, 4), torch.ones(1, 4))


@pytest.mark.parametrize('batch, d_s, d_t', [(5, 4, 4), (6, 3, 7), (1, 3, 3)])
def test_pkt_value_and_gradient_equal_the_float64_equations(batch, d_s, d_t):
    (s,), (s_ref,) = leaves(randn(batch, d_s, seed=batch * d_s))
    t = randn(batch, d_t, seed=40 + d_t).requires_grad_()
    got = F.pkt_loss(s, t)
    assert_same_value_and_grads(got, pkt_ref(s_ref, t, 1e-7), [s], [s_ref])
    assert torch.autograd.grad(got, t, allow_unused=True)[0] is None


def test_the_functional_forms_compute_in_float32_under_autocast():
    s, t = randn(8, 6, 4, 4, seed=50, dtype=torch.float32), randn(8, 5, 4, 4, seed=51, dtype=torch.float32)
    log_scale = torch.zeros(6)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        values = [F.hint_loss(s.bfloat16(), s.bfloat16()), F.at_loss([s.bfloat16()], [t.bfloat16()]),
                  F.vid_loss(s.bfloat16(), log_scale, s.bfloat16()), F.rkd_loss(s.bfloat16(), t.bfloat16()),
                  F.pkt_loss(s.bfloat16(), t.bfloat16())]
    assert [v.dtype for v in values] == [torch.float32] * 5


# -- torchdistill's classes: equal bit for bit (float32) -------------------------------------------------------------

@pytest.mark.parametrize('batch, d_s, d_t', [(64, 256, 256), (64, 1280, 2048), (7, 16, 32)])
def test_rkd_and_pkt_equal_torchdistills_losses_bit_for_bit(batch, d_s, d_t):
    s, t = randn(batch, d_s, seed=60, dtype=torch.float32), randn(batch, d_t, seed=61, dtype=torch.float32).relu()
    rkd = RKDLoss('avgpool', 'avgpool', 25.0, 50.0, 'mean')
    theirs = rkd({'avgpool': {'output': s[:, :, None, None]}}, {'avgpool': {'output': t[:, :, None, None]}})
    assert torch.equal(F.rkd_loss(s, t), theirs)
    theirs = PKTLoss('fc', 'input', 'fc', 'input')({'fc': {'input': s}}, {'fc': {'input': t}})
    assert torch.equal(F.pkt_loss(s, t), theirs)
    assert method_named('rkd').loss_key == 'RKDLoss' and method_named('pkt').loss_key == 'PKTLoss'


def test_on_equal_sizes_exact_at_and_vid_equal_torchdistills_bit_for_bit_and_differ_only_by_pooling():
    students = [randn(4, c, h, h, seed=70 + c, dtype=torch.float32) for c, h in ((8, 8), (16, 4))]
    teachers = [randn(4, c, h, h, seed=80 + c, dtype=torch.float32) for c, h in ((4, 8), (32, 4))]
    pairs = {f'pair{i}': {'student': {'io': 'output', 'path': f's{i}'}, 'teacher': {'io': 'output', 'path': f't{i}'},
                          'weight': 1} for i in range(2)}
    s_io = {f's{i}': {'output': f} for i, f in enumerate(students)}
    t_io = {f't{i}': {'output': f} for i, f in enumerate(teachers)}
    assert torch.equal(ExactATLoss(pairs)(s_io, t_io), ATLoss(pairs, mode='code')(s_io, t_io))
    with pytest.raises(RuntimeError):  # torchdistill's ATLoss cannot pair maps of different sizes
        ATLoss(pairs, mode='code')(s_io, {**t_io, 't0': {'output': pool_ref(teachers[0], 4)}})

    torch.manual_seed(1)
    shapes = [(f.shape[1], t.shape[1], t.shape[2]) for f, t in zip(students, teachers, strict=True)]
    theirs = [Regressor4VID(c_s, c_t, c_t, 1e-5, 5.0) for c_s, c_t, _ in shapes]
    ours = [VIDRegressor(c_s, c_t, c_t, size) for c_s, c_t, size in shapes]
    for mine, reference in zip(ours, theirs, strict=True):
        mine.load_state_dict({'log_scale': reference.soft_plus_param, **reference.state_dict()}, strict=False)
        assert torch.equal(mine.log_scale, reference.soft_plus_param)
    s_io = {f's{i}': {'output': m(f)} for i, (m, f) in enumerate(zip(ours, students, strict=True))}
    their_io = {f's{i}': {'output': m(f)} for i, (m, f) in enumerate(zip(theirs, students, strict=True))}
    assert all(torch.equal(s_io[k]['output'][0], their_io[k]['output'][0]) for k in s_io)
    assert torch.equal(ExactVIDLoss(pairs)(s_io, t_io), VIDLoss(pairs)(their_io, t_io))


@pytest.mark.parametrize('make, fragment', [
    (lambda: ExactATLoss({}), 'ExactATLoss: at_pairs={} is invalid: accepted values are a non-empty mapping'),
    (lambda: ExactATLoss({'a': {'student': {'io': 'out', 'path': 'x'}, 'teacher': {'io': 'output', 'path': 'y'}}}),
     "ExactATLoss: at_pairs.a.student={'io': 'out', 'path': 'x'} is invalid"),
    (lambda: ExactATLoss({'a': {'student': {'io': 'output', 'path': 'x'}, 'teacher': {'io': 'output', 'path': 'y'},
                                'weight': -1}}), 'ExactATLoss: at_pairs.a.weight=-1 is invalid'),
    (lambda: ExactATLoss({'a': {'student': {'io': 'output', 'path': 'x'}, 'teacher': {'io': 'output', 'path': 'y'}}},
                         p=-2), 'ExactATLoss: p=-2 is invalid: accepted range is a finite number > 0'),
    (lambda: ExactVIDLoss({'a': {'student': {'io': 'output', 'path': 'x'}}}), 'ExactVIDLoss: feature_pairs.a={'),
    (lambda: ExactVIDLoss({'a': {'student': {'io': 'output', 'path': 'x'}, 'teacher': {'io': 'output', 'path': 'y'}}},
                          eps=0), 'ExactVIDLoss: eps=0 is invalid'),
    (lambda: HintLoss(teacher_module_path='layer2', teacher_module_io='outputs'),
     "HintLoss: teacher_module_io='outputs' is invalid"),
])
def test_the_losses_refuse_bad_kwargs_in_one_line(make, fragment):
    with pytest.raises(ValueError) as info:
        make()
    assert str(info.value).startswith(fragment) and '\n' not in str(info.value)
