"""ITRD (Eq. 24): the functional terms against a float64 transcription of the equations, hand-derived values,
gradients, and the registered ITRDLoss and Linear4ITRD."""
import math

import pytest
import torch
import yaml
from torch import nn
from torchdistill.losses.registry import get_high_level_loss, get_mid_level_loss
from torchdistill.models.registry import get_auxiliary_model_wrapper

import ttm_torchdistill  # noqa: F401  (registers the loss and the wrapper)
from ttm_torchdistill import ITRDLoss, Linear4ITRD
from ttm_torchdistill import functional as F


def _reference(z_s, z_t, weight, bias, alpha):
    """Eq. 24 term by term in float64, with explicit sums (NOTES.md): (L_corr, L_mi)."""
    batch, d_t = z_t.shape
    f_s = z_s @ weight.T + bias

    def standardised(f):
        columns = []
        for x in range(f.shape[1]):
            column = f[:, x]
            mean = column.sum() / batch
            std = (((column - mean) ** 2).sum() / (batch - 1)).sqrt()  # Bessel's correction, no eps
            columns.append((column - mean) / std)
        return torch.stack(columns, dim=1)

    fs_hat, zt_hat = standardised(f_s), standardised(z_t)
    total = 0.0
    for x in range(d_t):
        c = sum(fs_hat[b, x] * zt_hat[b, x] for b in range(batch)) / batch
        total = total + (1 - c).abs() ** (2 * alpha)
    l_corr = total.log() / math.log(2)

    def gram(z):
        rows = [z[i] / (z[i] ** 2).sum().sqrt() for i in range(batch)]
        return [[(rows[i] * rows[j]).sum() for j in range(batch)] for i in range(batch)]

    g_s = gram(f_s if z_s.shape[1] != d_t else z_s)
    g_t = gram(z_t)
    g_st = [[g_s[i][j] * g_t[i][j] for j in range(batch)] for i in range(batch)]
    tr_s, tr_st = sum(g_s[i][i] for i in range(batch)), sum(g_st[i][i] for i in range(batch))
    l_mi = sum((g_s[i][j] / tr_s) ** 2 - (g_st[i][j] / tr_st) ** 2 for i in range(batch) for j in range(batch))
    return l_corr, l_mi


def _case(batch, d_s, d_t, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z_s = torch.relu(torch.randn(batch, d_s, generator=g, dtype=dtype)) + 0.1 * torch.rand(batch, d_s, generator=g,
                                                                                              dtype=dtype)
    z_t = 2 * torch.randn(batch, d_t, generator=g, dtype=dtype) + 1
    weight = torch.randn(d_t, d_s, generator=g, dtype=dtype) / math.sqrt(d_s)
    bias = 0.1 * torch.randn(d_t, generator=g, dtype=dtype)
    return z_s, z_t, weight, bias


SHAPES = [(2, 3, 3), (5, 4, 7), (8, 10, 6), (16, 64, 64), (7, 12, 12)]


@pytest.mark.parametrize('batch, d_s, d_t', SHAPES)
@pytest.mark.parametrize('alpha', [1.01, 1.5, 0.7])
def test_value_and_gradient_equal_the_float64_equations(batch, d_s, d_t, alpha):
    z_s, z_t, weight, bias = _case(batch, d_s, d_t, seed=batch * 100 + d_s)
    leaves = [t.clone().requires_grad_() for t in (z_s, weight, bias)]
    ref_leaves = [t.clone().requires_grad_() for t in (z_s, weight, bias)]
    got = F.itrd_terms(leaves[0], z_t, lambda z: z @ leaves[1].T + leaves[2], alpha)
    expected = _reference(ref_leaves[0], z_t, ref_leaves[1], ref_leaves[2], alpha)
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == torch.float64
        torch.testing.assert_close(g, e, rtol=1e-10, atol=1e-12)
    for term in (0, 1):  # each term's gradient on the student feature, the embedding's weight and its bias
        grads = torch.autograd.grad(got[term], leaves, allow_unused=True, retain_graph=True)
        ref_grads = torch.autograd.grad(expected[term], ref_leaves, allow_unused=True, retain_graph=True)
        for g, e in zip(grads, ref_grads, strict=True):
            if e is None:  # L_mi does not use the embedding when the sizes are equal
                assert g is None or torch.count_nonzero(g) == 0
            else:
                torch.testing.assert_close(g, e, rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize('batch, d_s, d_t', SHAPES)
def test_float32_inputs_give_float32_close_to_the_float64_equations(batch, d_s, d_t):
    z_s, z_t, weight, bias = _case(batch, d_s, d_t, seed=7)
    got = F.itrd_terms(z_s.float(), z_t.float(), lambda z: z @ weight.float().T + bias.float(), 1.5)
    expected = _reference(z_s, z_t, weight, bias, 1.5)
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g.double(), e, rtol=1e-4, atol=1e-5)


def _identity(z):
    return z


@pytest.mark.parametrize('alpha', [1.01, 1.5, 2.0])
def test_student_equal_to_teacher_under_identity_embedding(alpha):
    # orthogonal rows: c_x = (B - 1) / B for every x (Bessel's std), so L_corr = log2(d) - 2 alpha log2(B);
    # G_s = G_t = I, so L_mi = B / B^2 - B / B^2 = 0
    z = 3 * torch.eye(4, dtype=torch.float64)
    l_corr, l_mi = F.itrd_terms(z, z.clone(), _identity, alpha)
    assert l_corr.item() == pytest.approx(math.log2(4) - 2 * alpha * math.log2(4), abs=1e-12)
    assert l_mi.item() == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize('rho', [0.0, 0.3, -0.6, 0.9])
def test_two_samples_with_cosine_rho(rho):
    # B = 2, d = 2, identical student and teacher rows with cosine rho: G = [[1, rho], [rho, 1]], tr = 2, so
    # L_mi = (2 + 2 rho^2) / 4 - (2 + 2 rho^4) / 4 = (rho^2 - rho^4) / 2, and L_corr = log2(2 * (1/2)^(2 alpha))
    z = torch.tensor([[1.0, 0.0], [rho, math.sqrt(1 - rho * rho)]], dtype=torch.float64)
    l_corr, l_mi = F.itrd_terms(5 * z, z, _identity, 1.01)  # the student's scale changes neither term
    assert l_mi.item() == pytest.approx((rho ** 2 - rho ** 4) / 2, abs=1e-12)
    assert l_corr.item() == pytest.approx(1 - 2 * 1.01, abs=1e-12)


def test_a_negated_student_gives_the_largest_correlation_gap():
    # c_x = -(B - 1) / B: |1 - c_x| = (2B - 1) / B
    batch, d, alpha = 6, 5, 1.5
    z = torch.randn(batch, d, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    l_corr, _ = F.itrd_terms(z, z, lambda v: -v, alpha)
    assert l_corr.item() == pytest.approx(math.log2(d) + 2 * alpha * math.log2((2 * batch - 1) / batch), abs=1e-12)


def test_correlation_ignores_per_dimension_affine_maps_and_mi_ignores_row_scale():
    z_s, z_t, weight, bias = _case(6, 5, 5, seed=11)
    base = F.itrd_terms(z_s, z_t, _identity, 1.5)
    scale, shift = torch.rand(5, dtype=torch.float64) + 0.5, torch.randn(5, dtype=torch.float64)
    moved = F.itrd_terms(z_s, z_t, lambda z: z * scale + shift, 1.5)
    torch.testing.assert_close(moved[0], base[0])
    rows = torch.rand(6, 1, dtype=torch.float64) + 0.5
    rescaled = F.itrd_terms(z_s * rows, z_t * rows.flip(0), lambda z: z, 1.5)
    torch.testing.assert_close(rescaled[1], base[1])


def test_embedding_enters_mi_only_when_the_sizes_differ():
    z_s, z_t, weight, bias = _case(6, 5, 5, seed=12)
    a = F.itrd_terms(z_s, z_t, lambda z: z @ weight.T + bias, 1.01)
    b = F.itrd_terms(z_s, z_t, lambda z: z @ weight.flip(0).T - bias, 1.01)  # not a per-dimension affine map
    assert a[1].item() == b[1].item() and a[0].item() != b[0].item()
    # different sizes: an embedding that maps the student exactly onto the teacher makes G_s = G_t, so
    # L_mi = sum (G^2 - G^4) / B^2 on the teacher's normalised Gram matrix, and c_x = (B - 1) / B
    z_s, _, weight, bias = _case(6, 3, 7, seed=13)
    z_t = z_s @ weight.T + bias
    l_corr, l_mi = F.itrd_terms(z_s, z_t, lambda z: z @ weight.T + bias, 1.5)
    rows = z_t / z_t.norm(dim=1, keepdim=True)
    gram = rows @ rows.T
    assert l_mi.item() == pytest.approx(((gram ** 2 - gram ** 4).sum() / 36).item(), abs=1e-12)
    assert l_corr.item() == pytest.approx(math.log2(7) - 3 * math.log2(6), abs=1e-12)


def test_a_constant_dimension_gives_nan_like_the_reference():
    z_s, z_t, weight, bias = _case(4, 6, 6, seed=14)
    z_t[:, 2] = 0.0  # a teacher channel that is 0 for every sample: std 0, standardised 0/0
    l_corr, l_mi = F.itrd_terms(z_s, z_t, lambda z: z @ weight.T + bias, 1.01)
    assert math.isnan(l_corr.item()) and math.isfinite(l_mi.item())
    z_t[:, 2] = 1.0
    l_corr, _ = F.itrd_terms(z_s, z_t, lambda z: torch.cat([z[:, :5], torch.ones(4, 1, dtype=z.dtype)], 1), 1.01)
    assert math.isnan(l_corr.item())
    assert 'NaN' in F.itrd_terms.__doc__ and 'constant' in F.itrd_terms.__doc__


def test_gradients_reach_the_embedding_and_the_student_but_never_the_teacher():
    torch.manual_seed(0)
    student, teacher, embed = nn.Linear(10, 6), nn.Linear(10, 8), nn.Linear(6, 8)
    x = torch.randn(16, 10)
    l_corr, l_mi = F.itrd_terms(torch.relu(student(x)), teacher(x), embed, 1.5)
    (2 * l_corr + l_mi).backward()
    for p in (*student.parameters(), *embed.parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_computed_in_float32_under_autocast():
    z_s, z_t, weight, bias = _case(16, 64, 64, seed=15)
    low_s, low_t = z_s.bfloat16(), z_t.bfloat16()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = F.itrd_terms(low_s, low_t, _identity, 1.01)
    expected = _reference(low_s.double(), low_t.double(), torch.eye(64, dtype=torch.float64),
                          torch.zeros(64, dtype=torch.float64), 1.01)
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == torch.float32
        torch.testing.assert_close(g.double(), e, rtol=2e-5, atol=1e-6)  # bf16 arithmetic would be ~1e-2 off


@pytest.mark.parametrize('batch', [0, 1])
def test_a_batch_smaller_than_two_is_one_line(batch):
    z = torch.randn(batch, 4)
    with pytest.raises(ValueError, match=f'batch size {batch} ') as info:
        F.itrd_terms(z, z, _identity, 1.01)
    assert '\n' not in str(info.value)


# -- ITRDLoss and Linear4ITRD -------------------------------------------------------------------------------------

SNIPPET = """
key: 'WeightedSumLoss'
kwargs:
  sub_terms:
    itrd:
      criterion:
        key: 'ITRDLoss'
        kwargs:
          student_module_path: 'model.avgpool'
          student_module_io: 'output'
          teacher_module_path: 'avgpool'
          teacher_module_io: 'output'
          student_feature_size: {d_s}
          teacher_feature_size: {d_t}
          alpha_it: 1.5
          beta_corr: 2.0
          beta_mi: {beta_mi}
      weight: 1.0
"""


def _io(z_s, f_s, z_t):
    """What the hooks record: 4-D pooled features (B, d, 1, 1) and the wrapper's embedding output."""
    return ({'model.avgpool': {'output': z_s[:, :, None, None]}, 'embed': {'output': f_s}},
            {'avgpool': {'output': z_t[:, :, None, None]}})


@pytest.mark.parametrize('d_s, d_t, beta_mi', [(6, 6, 1.0), (6, 9, 1.0), (9, 6, 0.0)])
def test_registered_loss_is_glue_over_itrd_terms(d_s, d_t, beta_mi):
    criterion = get_high_level_loss(yaml.safe_load(SNIPPET.format(d_s=d_s, d_t=d_t, beta_mi=beta_mi)))
    loss_module, _ = criterion.term_dict['itrd']
    assert type(loss_module) is ITRDLoss and loss_module.student_embed_module_path == 'embed'
    z_s, z_t, weight, bias = (t.float() for t in _case(8, d_s, d_t, seed=16))
    embed = lambda z: z @ weight.T + bias  # noqa: E731
    student, teacher = _io(z_s, embed(z_s), z_t)
    loss = criterion({'student': student, 'teacher': teacher}, {}, None)
    l_corr, l_mi = F.itrd_terms(z_s, z_t, embed, 1.5)
    torch.testing.assert_close(loss, 2 * l_corr + beta_mi * l_mi)
    assert loss_module.last_parts == {'corr': l_corr.item(), 'mi': l_mi.item()}


def test_registered_loss_with_the_wrapper_trains_the_embedding_and_the_student_only():
    torch.manual_seed(0)
    student = nn.Sequential()
    student.add_module('body', nn.Linear(12, 6))
    student.add_module('avgpool', nn.ReLU())
    wrapper = get_auxiliary_model_wrapper('Linear4ITRD', student_model=student, input_module_path='model.avgpool',
                                          in_features=6, out_features=9, device=torch.device('cpu'),
                                          device_ids=None, distributed=False)
    assert type(wrapper) is Linear4ITRD and isinstance(wrapper.embed, nn.Linear) and wrapper.embed.bias is not None
    assert (wrapper.embed.in_features, wrapper.embed.out_features) == (6, 9)
    teacher = nn.Linear(12, 9)
    loss_fn = get_mid_level_loss({'key': 'ITRDLoss', 'kwargs': dict(
        student_module_path='model.avgpool', student_module_io='output', teacher_module_path='.',
        teacher_module_io='output', student_feature_size=6, teacher_feature_size=9, alpha_it=1.5)})
    assert (loss_fn.beta_corr, loss_fn.beta_mi) == (2.0, 1.0)  # the defaults
    recorded = {}
    student.avgpool.register_forward_hook(lambda m, i, o: recorded.__setitem__('model.avgpool', {'output': o}))
    wrapper.embed.register_forward_hook(lambda m, i, o: recorded.__setitem__('embed', {'output': o}))
    x = torch.randn(8, 12)
    wrapper(x)
    wrapper.secondary_forward(recorded)
    loss = loss_fn(recorded, {'.': {'output': teacher(x)}})
    z_s = student(x)
    expected = F.itrd_terms(z_s, teacher(x), wrapper.embed, 1.5)
    torch.testing.assert_close(loss, 2 * expected[0] + expected[1])
    loss.backward()
    for p in wrapper.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_batch_of_one_names_the_loss_and_the_batch_size():
    loss_fn = ITRDLoss('model.avgpool', 'output', 'avgpool', 'output', 4, 4, alpha_it=1.01)
    z = torch.randn(1, 4)
    with pytest.raises(ValueError) as info:
        loss_fn(*_io(z, z, z))
    assert str(info.value) == ('ITRDLoss: batch size 1 is too small: the batch standard deviation needs at least '
                               '2 samples')


@pytest.mark.parametrize('name, value, accepted', [
    ('alpha_it', 0, '> 0'), ('alpha_it', -1.5, '> 0'), ('alpha_it', float('nan'), '> 0'), ('alpha_it', '1.5', '> 0'),
    ('alpha_it', True, '> 0'), ('beta_corr', -1, '>= 0'), ('beta_mi', float('inf'), '>= 0'),
    ('student_feature_size', 0, 'integers >= 1'), ('teacher_feature_size', 2.5, 'integers >= 1'),
    ('student_feature_size', True, 'integers >= 1'),
])
def test_a_bad_parameter_is_one_line_naming_loss_value_and_range(name, value, accepted):
    kwargs = dict(student_module_path='model.avgpool', student_module_io='output', teacher_module_path='avgpool',
                  teacher_module_io='output', student_feature_size=4, teacher_feature_size=4, alpha_it=1.01)
    kwargs[name] = value
    with pytest.raises(ValueError) as info:
        ITRDLoss(**kwargs)
    message = str(info.value)
    assert '\n' not in message and message.startswith(f'ITRDLoss: {name}={value!r} is invalid') and accepted in message


def test_features_of_another_size_are_one_line():
    loss_fn = ITRDLoss('model.avgpool', 'output', 'avgpool', 'output', 4, 6, alpha_it=1.5)
    z_s, z_t = torch.randn(3, 5), torch.randn(3, 6)
    with pytest.raises(ValueError, match=r"^ITRDLoss: student_feature_size=4, but the student's 'model.avgpool' "
                                         r'\(output\) has 5 features$'):
        loss_fn(*_io(z_s, z_t, z_t))
    z_s = torch.randn(3, 4)
    with pytest.raises(ValueError, match=r"^ITRDLoss: the embedded student feature 'embed' has shape \(3, 5\)"):
        loss_fn(*_io(z_s, torch.randn(3, 5), z_t))


@pytest.mark.parametrize('kwargs, fragment', [
    (dict(in_features=0), 'Linear4ITRD: in_features=0 is invalid: accepted values are integers >= 1'),
    (dict(out_features='abc'), "Linear4ITRD: out_features='abc' is invalid"),
    (dict(student_model=None, teacher_model=nn.Linear(2, 2)), 'Linear4ITRD wraps the student'),
])
def test_the_wrapper_refuses_bad_sizes_and_the_teacher(kwargs, fragment):
    args = dict(student_model=nn.Linear(2, 2), input_module_path='model', in_features=2, out_features=3,
                device=torch.device('cpu'), device_ids=None, distributed=False)
    with pytest.raises(ValueError, match=fragment):
        Linear4ITRD(**{**args, **kwargs})
