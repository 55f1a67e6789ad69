"""The CRD benchmark's feature methods FitNet, AT, VID, RKD and PKT in torchdistill: the student wrappers
Regressor4FitNet and Regressors4ExactVID (the benchmark's regressors, their state, checks and DDP), the recipe rules for
the methods' kwargs, each loss through torchdistill's hooks, auxiliary model wrappers and WeightedSumLoss, and VID
under `ttm-distill train`."""
import math
from pathlib import Path

import pytest
import torch
import yaml
from feature_refs import assert_same_value_and_grads, leaves, randn
from torch import nn
from torchdistill.core.util import extract_io_dict, set_hooks, update_io_dict
from torchdistill.losses.registry import get_high_level_loss
from torchdistill.models.registry import get_auxiliary_model_wrapper
from torchdistill.models.wrapper import build_auxiliary_model_wrapper

import ttm_torchdistill  # noqa: F401  (registers the losses and the wrappers)
from ttm_torchdistill import Regressor4FitNet, Regressors4ExactVID
from ttm_torchdistill import functional as F
from ttm_torchdistill.errors import UsageError
from ttm_torchdistill.recipe.document import RecipeDocument

CPU = torch.device('cpu')


# -- the student wrappers ---------------------------------------------------------------------------------------

def _fitnet(in_channels=4, out_channels=6, in_size=8, out_size=4, **kwargs):
    return get_auxiliary_model_wrapper('Regressor4FitNet', student_model=kwargs.pop('student_model', nn.Identity()),
                                       input_module_path='model', in_channels=in_channels, out_channels=out_channels,
                                       in_size=in_size, out_size=out_size, device=CPU, device_ids=None,
                                       distributed=False, **kwargs)


def _vid_wrapper(sizes, distributed=False, **kwargs):
    regressors = [dict(input_module_path=f's{i}', in_channels=a, mid_channels=b, out_channels=c, out_size=d)
                  for i, (a, b, c, d) in enumerate(sizes)]
    return get_auxiliary_model_wrapper('Regressors4ExactVID', student_model=nn.Identity(), regressors=regressors,
                                       device=CPU, device_ids=None, distributed=distributed, **kwargs)


@pytest.mark.parametrize('in_size, out_size, conv, kernel, stride, padding', [
    (16, 8, nn.Conv2d, 3, 2, 1), (8, 16, nn.ConvTranspose2d, 4, 2, 1), (6, 2, nn.Conv2d, 5, 1, 0),
    (8, 8, nn.Conv2d, 1, 1, 0), (8, 4, nn.Conv2d, 3, 2, 1), (2, 1, nn.Conv2d, 3, 2, 1), (5, 3, nn.Conv2d, 3, 1, 0),
])  # the benchmark's order: twice the size first (8 -> 4 is a strided conv, not a valid conv of kernel 5)
def test_the_fitnet_regressor_takes_the_benchmarks_form_by_the_sizes(in_size, out_size, conv, kernel, stride,
                                                                      padding):
    torch.manual_seed(2)
    wrapper = _fitnet(in_size=in_size, out_size=out_size).double()
    assert type(wrapper) is Regressor4FitNet and list(wrapper.regressor) == [wrapper.regressor.conv,
                                                                              wrapper.regressor.bn,
                                                                              wrapper.regressor.relu]
    layer = wrapper.regressor.conv
    assert type(layer) is conv and layer.bias is not None
    assert (layer.kernel_size, layer.stride, layer.padding) == ((kernel,) * 2, (stride,) * 2, (padding,) * 2)
    assert isinstance(wrapper.regressor.bn, nn.BatchNorm2d) and wrapper.regressor.bn.num_features == 6
    (x,), (x_ref,) = leaves(randn(2, 4, in_size, in_size, seed=in_size))
    teacher = randn(2, 6, out_size, out_size, seed=out_size)
    r, r_ref = wrapper.regressor(x), wrapper.regressor(x_ref)
    assert r.shape == (2, 6, out_size, out_size)
    assert_same_value_and_grads(F.hint_loss(r, teacher), ((r_ref - teacher) ** 2).sum() / r.numel(),
                                 [x, layer.weight], [x_ref, layer.weight])
    ids = {id(p) for p in wrapper.parameters()}
    assert all(id(p) in ids for p in wrapper.regressor.parameters())  # the student's optimizer trains it


def test_the_wrappers_round_trip_their_state_and_check_the_maps_they_get():
    torch.manual_seed(3)
    fitnet, vid = _fitnet(), _vid_wrapper([(4, 5, 6, 4), (2, 3, 3, 2)])
    with torch.no_grad():
        vid.regressors[1].log_scale.add_(0.5)
    assert {'regressor.conv.weight', 'regressor.bn.running_mean'} <= set(fitnet.state_dict())
    assert {'regressors.0.log_scale', 'regressors.1.regressor.4.weight'} <= set(vid.state_dict())
    assert {id(r.log_scale) for r in vid.regressors} <= {id(p) for p in vid.parameters()}
    torch.manual_seed(4)
    fitnet2, vid2 = _fitnet(), _vid_wrapper([(4, 5, 6, 4), (2, 3, 3, 2)])
    fitnet2.load_state_dict(fitnet.state_dict())
    vid2.load_state_dict(vid.state_dict())
    x = torch.randn(2, 4, 8, 8)
    assert torch.equal(fitnet2.regressor(x), fitnet.regressor(x))
    assert all(torch.equal(a, b) for a, b in zip(vid2.regressors[1](x[:, :2]), vid.regressors[1](x[:, :2]),
                                                 strict=True))
    recorded = {}
    fitnet.regressor.register_forward_hook(lambda m, i, o: recorded.setdefault('regressor', o))
    fitnet.secondary_forward({'model': {'output': x}})
    assert recorded['regressor'].shape == (2, 6, 4, 4)
    with pytest.raises(ValueError, match=r"^Regressor4FitNet: expected the output of 'model' of shape "
                                         r'\(B, in_channels, in_size, in_size\) = \(B, 4, 8, 8\), got \(2, 4, 4, 4\)$'):
        fitnet.secondary_forward({'model': {'output': x[:, :, :4, :4]}})
    with pytest.raises(ValueError, match=r"^Regressors4ExactVID: regressors\[1\]: expected the output of 's1' of shape "
                                         r'\(B, 2, H, H\) \(in_channels=2, square\), got \(2, 4, 8, 8\)$'):
        vid.secondary_forward({'s0': {'output': x}, 's1': {'output': x}})


@pytest.mark.parametrize('kwargs, message', [
    (dict(in_size=4, out_size=16), "Regressor4FitNet: in_size=4 and out_size=16: the benchmark's regressor needs "
                                   'in_size = 2 out_size, 2 in_size = out_size or in_size >= out_size'),
    (dict(in_channels=0), 'Regressor4FitNet: in_channels=0 is invalid: accepted values are integers >= 1'),
    (dict(out_size=True), 'Regressor4FitNet: out_size=True is invalid: accepted values are integers >= 1'),
    (dict(input_module_io='both'), "Regressor4FitNet: input_module_io='both' is invalid: accepted values are "
                                   "'input' and 'output'"),
    (dict(student_model=None, teacher_model=nn.Identity()), 'Regressor4FitNet wraps the student: use it under '
                                                            'train.student, not train.teacher'),
])
def test_the_fitnet_wrapper_refuses_bad_kwargs_in_one_line(kwargs, message):
    with pytest.raises(ValueError) as info:
        _fitnet(**kwargs)
    assert str(info.value) == message


@pytest.mark.parametrize('kwargs, fragment', [
    (dict(regressors=[]), 'Regressors4ExactVID: regressors=[] is invalid: accepted values are a non-empty list of'),
    (dict(regressors=[{'input_module_path': 'a', 'in_channels': 1}]), 'Regressors4ExactVID: regressors[0]={'),
    (dict(regressors=[{'input_module_path': 'a', 'in_channels': 1, 'mid_channels': 2, 'out_channels': 0,
                       'out_size': 2}]), 'Regressors4ExactVID: regressors[0]: out_channels=0 is invalid'),
    (dict(regressors=[{'input_module_path': 'a', 'input_module_io': 'inp', 'in_channels': 1, 'mid_channels': 2,
                       'out_channels': 2, 'out_size': 2}]), "input_module_io='inp' are invalid"),
    (dict(init_pred_var=0.0), 'Regressors4ExactVID: init_pred_var=0.0 is invalid: accepted range is a finite '
                              'number > 0'),
    (dict(eps=-1.0), 'Regressors4ExactVID: eps=-1.0 is invalid'),
])
def test_the_vid_wrapper_refuses_bad_kwargs_in_one_line(kwargs, fragment):
    args = dict(student_model=nn.Identity(), regressors=[{'input_module_path': 'a', 'in_channels': 1,
                                                          'mid_channels': 2, 'out_channels': 2, 'out_size': 2}],
                device=CPU, device_ids=None, distributed=False)
    with pytest.raises(ValueError) as info:
        Regressors4ExactVID(**{**args, **kwargs})
    assert str(info.value).startswith(fragment) or fragment in str(info.value)
    assert '\n' not in str(info.value)


def test_vids_log_scale_is_a_forward_output_that_distributed_data_parallel_syncs(tmp_path):
    torch.distributed.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)
    try:
        wrapper = _vid_wrapper([(3, 4, 4, 2)], distributed=True, find_unused_parameters=True)
        regressor = wrapper.regressors[0]
        assert isinstance(regressor, nn.parallel.DistributedDataParallel)
        for _ in range(2):  # the log_scale itself as an output: 'Expected to mark a variable ready only once'
            mean, log_scale = regressor(torch.randn(2, 3, 4, 4))
            F.vid_loss(mean, log_scale, torch.randn(2, 4, 2, 2)).backward()
        assert regressor.module.log_scale.grad is not None and regressor.module.regressor[0].weight.grad is not None
    finally:
        torch.distributed.destroy_process_group()


# -- the recipe rules ----------------------------------------------------------------------------------------------

RECIPE = {'train': {
    'student': {'auxiliary_model_wrapper': {'key': 'Regressors4ExactVID', 'kwargs': {
        'regressors': [{'input_module_path': 'model.layer1', 'in_channels': 4, 'mid_channels': 5, 'out_channels': 5,
                        'out_size': 8}], 'init_pred_var': 5.0, 'eps': 1.0e-5}}},
    'criterion': {'key': 'WeightedSumLoss', 'kwargs': {'sub_terms': {
        'at': {'criterion': {'key': 'ExactATLoss', 'kwargs': {'p': 2.0, 'at_pairs': {'pair1': {
            'student': {'io': 'output', 'path': 'layer1'}, 'teacher': {'io': 'output', 'path': 'layer1'},
            'weight': 1.0}}}}, 'weight': 1000.0},
        'rkd': {'criterion': {'key': 'RKDLoss', 'kwargs': {
            'student_output_path': 'avgpool', 'teacher_output_path': 'avgpool', 'dist_factor': 25.0,
            'angle_factor': 50.0, 'reduction': 'mean'}}, 'weight': 1.0}}}}}}
WRAPPER = 'train.student.auxiliary_model_wrapper'
TERMS = 'train.criterion.kwargs.sub_terms'
FITNET_WRAPPER = {'key': 'Regressor4FitNet', 'kwargs': {'input_module_path': 'model.layer2', 'in_channels': 4,
                                                        'out_channels': 5, 'in_size': 4, 'out_size': 8}}


def _validate(key=None, value=None):
    recipe = yaml.safe_load(yaml.safe_dump(RECIPE))
    if key is not None:
        *parents, last = key.split('.')
        node = recipe
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[last] = value
    RecipeDocument(yaml.safe_dump(recipe, sort_keys=False), Path('r.yaml')).validate()


@pytest.mark.parametrize('key, value, expected', [
    (f'{WRAPPER}.kwargs.regressors.0.in_channels', 0, 'an integer >= 1'),
    (f'{WRAPPER}.kwargs.regressors.0.out_size', 2.5, 'an integer >= 1'),
    (f'{WRAPPER}.kwargs.regressors.0.input_module_io', 'out', "one of 'input', 'output'"),
    (f'{WRAPPER}.kwargs.regressors.0.input_module_path', '', 'a non-empty string'),
    (f'{WRAPPER}.kwargs.init_pred_var', 0, 'a number > 0'),
    (f'{WRAPPER}.kwargs.eps', -1e-5, 'a number > 0'),
    (f'{TERMS}.at.criterion.kwargs.p', 0, 'a number > 0'),
    (f'{TERMS}.at.criterion.kwargs.at_pairs.pair1.student.io', 'outputs', "one of 'input', 'output'"),
    (f'{TERMS}.at.criterion.kwargs.at_pairs.pair1.teacher.path', ' ', 'a non-empty string'),
    (f'{TERMS}.at.criterion.kwargs.at_pairs.pair1.weight', -1, 'a number >= 0'),
    (f'{TERMS}.rkd.criterion.kwargs.dist_factor', -25, 'a number >= 0'),
    (f'{TERMS}.rkd.criterion.kwargs.angle_factor', 'big', 'a number >= 0'),
    (f'{TERMS}.rkd.criterion.kwargs.teacher_output_path', None, 'a non-empty string'),
])
def test_the_recipe_rules_check_the_feature_methods_kwargs(key, value, expected):
    _validate()
    with pytest.raises(UsageError) as info:
        _validate(key, value)
    assert str(info.value) == f'r.yaml: {key}={value!r}: expected {expected}'


@pytest.mark.parametrize('name, value', [('in_size', 0), ('out_channels', True), ('input_module_io', 'in')])
def test_the_recipe_rules_check_the_fitnet_wrapper(name, value):
    _validate(WRAPPER, FITNET_WRAPPER)
    with pytest.raises(UsageError, match=rf'^r.yaml: {WRAPPER}.kwargs.{name}={value!r}: expected '):
        _validate(WRAPPER, {**FITNET_WRAPPER, 'kwargs': {**FITNET_WRAPPER['kwargs'], name: value}})


# -- each loss through torchdistill's hooks, auxiliary model wrappers and WeightedSumLoss ----------------------------

class _Net(nn.Module):
    """Two conv stages (the maps the methods pair), a pooled embedding and a classifier, for 8x8 inputs."""

    def __init__(self, widths, strides):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(3, widths[0], 3, strides[0], 1), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(widths[0], widths[1], 3, strides[1], 1), nn.ReLU())
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[1], 5)

    def forward(self, x):
        return self.fc(self.avgpool(self.layer2(self.layer1(x))).flatten(1))


# student maps: layer1 4 x 4 x 4, layer2 6 x 4 x 4; teacher maps: layer1 5 x 8 x 8, layer2 7 x 2 x 2
PAIRS = """
              {key}:
                pair1:
                  student: {{io: 'output', path: '{s1}'}}
                  teacher: {{io: 'output', path: 'layer1'}}
                pair2:
                  student: {{io: 'output', path: '{s2}'}}
                  teacher: {{io: 'output', path: 'layer2'}}"""
METHODS = {
    'fitnet': ("""
auxiliary_model_wrapper:
  key: 'Regressor4FitNet'
  kwargs: {input_module_path: 'model.layer1', in_channels: 4, out_channels: 5, in_size: 4, out_size: 8}
forward_hook: {input: [], output: ['model.layer1', 'regressor']}""", "forward_hook: {input: [], output: ['layer1']}",
               """
            key: 'HintLoss'
            kwargs: {student_module_path: 'regressor', student_module_io: 'output', teacher_module_path: 'layer1',
                     teacher_module_io: 'output'}""", 100.0),
    'at': ("forward_hook: {input: [], output: ['layer1', 'layer2']}",
           "forward_hook: {input: [], output: ['layer1', 'layer2']}", """
            key: 'ExactATLoss'
            kwargs:""" + PAIRS.format(key='at_pairs', s1='layer1', s2='layer2') + """
              p: 2.0""", 1000.0),
    'vid': ("""
auxiliary_model_wrapper:
  key: 'Regressors4ExactVID'
  kwargs:
    regressors:
      - {input_module_path: 'model.layer1', in_channels: 4, mid_channels: 5, out_channels: 5, out_size: 8}
      - {input_module_path: 'model.layer2', in_channels: 6, mid_channels: 7, out_channels: 7, out_size: 2}
    init_pred_var: 5.0
    eps: 0.00001
forward_hook: {input: [], output: ['model.layer1', 'model.layer2', 'regressors.0', 'regressors.1']}""",
            "forward_hook: {input: [], output: ['layer1', 'layer2']}", """
            key: 'ExactVIDLoss'
            kwargs:""" + PAIRS.format(key='feature_pairs', s1='regressors.0', s2='regressors.1') + """
              eps: 0.00001""", 1.0),
    'rkd': ("forward_hook: {input: [], output: ['avgpool']}", "forward_hook: {input: [], output: ['avgpool']}", """
            key: 'RKDLoss'
            kwargs: {student_output_path: 'avgpool', teacher_output_path: 'avgpool', dist_factor: 25.0,
                     angle_factor: 50.0, reduction: 'mean'}""", 1.0),
    'pkt': ("forward_hook: {input: ['fc'], output: []}", "forward_hook: {input: ['fc'], output: []}", """
            key: 'PKTLoss'
            kwargs: {student_module_path: 'fc', student_module_io: 'input', teacher_module_path: 'fc',
                     teacher_module_io: 'input', eps: 0.0000001}""", 30000.0),
}
CRITERION = """
key: 'WeightedSumLoss'
kwargs:
  sub_terms:
    ce:
      criterion: {{key: 'CrossEntropyLoss', kwargs: {{reduction: 'mean'}}}}
      criterion_wrapper:
        key: 'SimpleLossWrapper'
        kwargs:
          input: {{is_from_teacher: False, module_path: '.', io: 'output'}}
          target: {{uses_label: True}}
      weight: 1.0
    {name}:
      criterion:{criterion}
      weight: {weight}
"""


@pytest.mark.parametrize('name', list(METHODS))
def test_each_loss_trains_through_torchdistills_hooks_wrappers_and_weighted_sum(name):
    """As torchdistill's DistillationBox runs a step: the teacher under no_grad, the student (its auxiliary wrapper
    built from the config), the wrapper's secondary forward on the hooked maps, then the criterion."""
    student_yaml, teacher_yaml, criterion_yaml, weight = METHODS[name]
    torch.manual_seed(5)
    student, teacher = _Net((4, 6), (2, 1)), _Net((5, 7), (1, 4))
    student_config, teacher_config = yaml.safe_load(student_yaml), yaml.safe_load(teacher_yaml)
    wrapped = build_auxiliary_model_wrapper(student_config, student_model=student, device=CPU, device_ids=None,
                                            distributed=False) or student
    criterion = get_high_level_loss(yaml.safe_load(CRITERION.format(name=name, criterion=criterion_yaml,
                                                                      weight=weight)))
    s_hooks, t_hooks = {}, {}
    handles = (set_hooks(wrapped, wrapped, student_config, s_hooks)
               + set_hooks(teacher, teacher, teacher_config, t_hooks))
    x, y = torch.randn(6, 3, 8, 8), torch.arange(6) % 5
    with torch.no_grad():
        t_out = teacher(x)
    t_io = extract_io_dict(t_hooks, CPU)
    t_io['.']['output'] = t_out
    s_out = wrapped(x)
    s_io = extract_io_dict(s_hooks, CPU)
    s_io['.']['output'] = s_out
    if wrapped is not student:
        wrapped.secondary_forward(s_io)
    update_io_dict(s_io, extract_io_dict(s_hooks, CPU))
    loss = criterion({'teacher': t_io, 'student': s_io}, {}, y)
    term = criterion.term_dict[name][0]
    term_value = term(s_io, t_io)
    assert torch.isfinite(loss) and loss > torch.nn.functional.cross_entropy(s_out, y) and term_value > 0
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(s_out, y) + weight * term_value)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in wrapped.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    extra = [p for n, p in wrapped.named_parameters() if not n.startswith('model.')] if wrapped is not student else []
    assert len(extra) == {'fitnet': 4, 'vid': 8}.get(name, 0)  # conv weight and bias, BN's two; VID: 3 convs + scale
    assert all(p.grad.abs().sum() > 0 for p in extra)  # the regressors (and VID's log_scale) learn from the loss
    for _, handle in handles:
        handle.remove()


# -- through ttm-distill train ----------------------------------------------------------------------------------------

TINY_STUDENT = """  student:
    forward_proc: 'forward_batch_only'
    sequential: []
    wrapper: 'DistributedDataParallel'
    requires_grad: True
"""
TINY_TERM = """        wttm:
          criterion:
            key: 'WTTMLoss'
            kwargs:
              gamma: 0.8
              beta: 1.6
              alpha: 1.0
          weight: 1.0
"""
# tiny_cnn on 16 x 16 blobs: the student's conv 'model.0' -> ReLU '1' (8 x 8 x 8) -> pool '2' (8 x 2 x 2); the
# teacher's conv -> BN -> ReLU '2' (8 x 8 x 8) -> pool '3' (8 x 2 x 2): VID pools the student's first map and the
# teacher's second
VID_STUDENT = """  student:
    forward_proc: 'forward_batch_only'
    sequential: []
    auxiliary_model_wrapper:
      key: 'Regressors4ExactVID'
      kwargs:
        regressors:
          - {input_module_path: 'model.1', in_channels: 8, mid_channels: 8, out_channels: 8, out_size: 2}
          - {input_module_path: 'model.2', in_channels: 8, mid_channels: 8, out_channels: 8, out_size: 8}
    forward_hook: {input: [], output: ['model.1', 'model.2', 'regressors.0', 'regressors.1']}
    wrapper:
    requires_grad: True
"""
VID_TERM = """        ce:
          criterion: {key: 'CrossEntropyLoss', kwargs: {reduction: 'mean'}}
          criterion_wrapper:
            key: 'SimpleLossWrapper'
            kwargs:
              input: {is_from_teacher: False, module_path: '.', io: 'output'}
              target: {uses_label: True}
          weight: 1.0
        vid:
          criterion:
            key: 'ExactVIDLoss'
            kwargs:
              feature_pairs:
                pair1: {student: {io: 'output', path: 'regressors.0'}, teacher: {io: 'output', path: '3'}}
                pair2: {student: {io: 'output', path: 'regressors.1'}, teacher: {io: 'output', path: '2'}}
          weight: 1.0
"""


def test_vid_trains_under_ttm_distill_and_reports_its_pairs(tmp_path):
    from conftest import TINY, cli, ok

    text = TINY.read_text()
    assert TINY_STUDENT in text and TINY_TERM in text and "    requires_grad: False\n  student:" in text
    text = text.replace(TINY_STUDENT, VID_STUDENT).replace(TINY_TERM, VID_TERM).replace(
        '    requires_grad: False\n  student:', "    forward_hook: {input: [], output: ['2', '3']}\n"
        '    requires_grad: False\n  student:')
    (tmp_path / 'vid.yaml').write_text(text.replace('./ckpt/tiny/wttm/', './ckpt/tiny/vid/'))
    ok(cli(['train', 'vid.yaml', '--device', 'cpu', '--set', 'train.num_epochs=1'], tmp_path))
    records = [yaml.safe_load(line) for line in next(tmp_path.rglob('*.metrics.jsonl')).read_text().splitlines()]
    assert len(records) == 1 and all(math.isfinite(records[0][k]) for k in ('pair1', 'pair2', 'loss.vid'))
