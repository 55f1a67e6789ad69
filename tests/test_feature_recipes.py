"""The feature-based rivals' CIFAR-100 recipes (FitNet, AT, VID, RKD, PKT on the 13 pairs): the paper's numbers, the
benchmark's weights and features, the pair's schedule, every recipe checked; a sample that runs every pair and every
method trains through the runner, one recipe per method takes a step in torchdistill's own pipeline, and the methods
with trainable modules resume exactly."""
import json

import pytest
import torch
from conftest import (
    FAST,
    RECIPES,
    assert_same_state,
    cli,
    cli_env,
    ok,
    run_cli,
    straight_and_resumed,
    torchdistill_runner_models,
)
from doc_blocks import hook
from torchdistill.common.yaml_util import load_yaml_file
from torchdistill.core.distillation import get_distillation_box

from ttm_torchdistill.description import RunDescription
from ttm_torchdistill.models.cifar import FEATURE_LISTS, FEATURES
from ttm_torchdistill.runner import run_train

# Transcribed from the paper (Tables 1 and 3, NOTES.md), independently of the renderer's table: teacher, student,
# top-1 of FitNet, AT, VID, RKD, PKT.
PAPER = """
wrn_40_2 wrn_16_2 73.58 74.08 74.11 73.35 74.54
wrn_40_2 wrn_40_1 72.24 72.77 73.30 72.22 73.45
resnet56 resnet20 69.21 70.55 70.38 69.61 70.34
resnet110 resnet20 68.99 70.22 70.16 69.25 70.25
resnet110 resnet32 71.06 72.31 72.61 71.82 72.61
resnet32x4 resnet8x4 73.50 73.44 73.09 71.90 73.64
vgg13_cifar vgg8_cifar 71.02 71.43 71.23 71.48 72.88
vgg13_cifar mobilenetv2_cifar 64.14 59.40 65.56 64.52 67.13
resnet50_cifar mobilenetv2_cifar 63.16 58.58 67.57 64.43 66.52
resnet50_cifar vgg8_cifar 70.69 71.84 70.30 71.50 73.01
resnet32x4 shufflenetv1_cifar 73.59 71.73 73.38 72.28 74.10
resnet32x4 shufflenetv2_cifar 73.54 72.73 73.40 73.21 74.69
wrn_40_2 shufflenetv1_cifar 73.73 73.32 73.61 72.21 73.89
"""
METHODS = ('fitnet', 'at', 'vid', 'rkd', 'pkt')
WEIGHTS = {'fitnet': 100.0, 'at': 1000.0, 'vid': 1.0, 'rkd': 1.0, 'pkt': 30000.0}  # the benchmark's -b
LOSSES = {'fitnet': 'HintLoss', 'at': 'ExactATLoss', 'vid': 'ExactVIDLoss', 'rkd': 'RKDLoss', 'pkt': 'PKTLoss'}
ROWS = {(t, s): dict(zip(METHODS, map(float, top1), strict=True))
        for t, s, *top1 in (line.split() for line in PAPER.strip().splitlines())}
NAMES = [f'cifar100/{m}/{s}_from_{t}.yaml' for m in METHODS for t, s in ROWS]
SAME_AS_THE_PAIRS_WTTM = ('models.teacher_model', 'train.num_epochs', 'train.train_data_loader',
                          'train.val_data_loader', 'train.optimizer', 'train.scheduler', 'train.pre_epoch_process',
                          'test')


def _parse(name):
    method, file = name.split('/')[1:]
    student, teacher = file[:-len('.yaml')].split('_from_')
    return method, student, teacher


def _at(config, path):
    for part in path.split('.'):
        config = config[part]
    return config


def _hooks(role):
    hook = role['forward_hook']
    return {('input', p) for p in hook['input']} | {('output', p) for p in hook['output']}


def _taps(taps, prefix=''):
    return {(t.io, prefix + t.path) for t in taps}


def test_every_pair_has_the_five_methods():
    shipped = sorted(p.relative_to(RECIPES).as_posix() for m in METHODS for p in (RECIPES / 'cifar100' / m).glob('*'))
    assert shipped == sorted(NAMES) and len(NAMES) == 65


@pytest.mark.parametrize('name', NAMES)
def test_the_benchmarks_weights_features_and_the_pairs_schedule(name, cifar100_env):
    method, student, teacher = _parse(name)
    config = load_yaml_file(str(RECIPES / name))
    wttm = load_yaml_file(str(RECIPES / f'cifar100/wttm/{student}_from_{teacher}.yaml'))
    for key in SAME_AS_THE_PAIRS_WTTM:
        assert _at(config, key) == _at(wttm, key), key
    text, wttm_text = ((RECIPES / n).read_text() for n in (name, f'cifar100/wttm/{student}_from_{teacher}.yaml'))
    datasets = [t[t.index('\ndatasets:'):t.index('\nmodels:')] for t in (text, wttm_text)]
    assert datasets[0] == datasets[1]  # the same data and transforms, as written
    assert config['paper']['top1'] == ROWS[(teacher, student)][method]
    assert 'from the CRD benchmark' in config['paper']['source']
    models = config['models']
    assert models['student_model']['key'] == student and models['student_model']['src_ckpt'] is None
    experiment = f'cifar100-{student}_from_{teacher}'
    assert models['student_model']['dst_ckpt'] == f'./resource/ckpt/cifar100/{method}/{experiment}.pt'
    terms = config['train']['criterion']['kwargs']['sub_terms']
    assert list(terms) == ['ce', method]  # cross entropy with weight 1, the feature term, no KD
    assert terms['ce']['criterion']['key'] == 'CrossEntropyLoss' and terms['ce']['weight'] == 1.0
    term = terms[method]
    assert term['criterion']['key'] == LOSSES[method] and term['weight'] == WEIGHTS[method]
    kwargs = term['criterion']['kwargs']
    train = config['train']
    t_list, s_list = FEATURE_LISTS[teacher], FEATURE_LISTS[student]
    assert train['teacher']['requires_grad'] is False
    wrapper = train['student'].get('auxiliary_model_wrapper')
    assert train['student']['wrapper'] == (None if wrapper else 'DistributedDataParallel')
    if method == 'fitnet':  # entry 2, the student's through the benchmark's regressor
        assert _hooks(train['teacher']) == _taps([t_list[2]])
        assert wrapper['key'] == 'Regressor4FitNet'
        w = wrapper['kwargs']
        assert (w['input_module_path'], w['in_channels'], w['in_size']) == (
            f'model.{s_list[2].path}', s_list[2].channels, s_list[2].size)
        assert (w['out_channels'], w['out_size']) == (t_list[2].channels, t_list[2].size)
        assert _hooks(train['student']) == _taps([s_list[2]], 'model.') | {('output', 'regressor')}
        assert (kwargs['student_module_path'], kwargs['teacher_module_path']) == ('regressor', t_list[2].path)
    elif method in ('at', 'vid'):  # entries 1..-2, paired in order
        n = min(len(t_list), len(s_list)) - 2
        t_maps, s_maps = t_list[1:1 + n], s_list[1:1 + n]
        assert _hooks(train['teacher']) == _taps(t_maps)
        pairs = kwargs['at_pairs' if method == 'at' else 'feature_pairs']
        assert [(p['teacher']['io'], p['teacher']['path']) for p in pairs.values()] == [(t.io, t.path) for t in t_maps]
        if method == 'at':
            assert wrapper is None and _hooks(train['student']) == _taps(s_maps) and kwargs['p'] == 2.0
            assert [(p['student']['io'], p['student']['path']) for p in pairs.values()] == [
                (s.io, s.path) for s in s_maps]
        else:
            assert wrapper['key'] == 'Regressors4ExactVID'
            regressors = wrapper['kwargs']['regressors']
            assert [(r['input_module_path'], r['in_channels'], r['mid_channels'], r['out_channels'], r['out_size'])
                    for r in regressors] == [(f'model.{s.path}', s.channels, t.channels, t.channels, t.size)
                                             for t, s in zip(t_maps, s_maps, strict=True)]
            assert wrapper['kwargs']['init_pred_var'] == 5.0 and kwargs['eps'] == 1e-5
            outputs = [f'regressors.{i}' for i in range(n)]
            assert [p['student']['path'] for p in pairs.values()] == outputs
            assert _hooks(train['student']) == _taps(s_maps, 'model.') | {('output', o) for o in outputs}
    elif method == 'rkd':  # the pooled embedding
        assert _hooks(train['student']) == {('output', FEATURES[student][0])}
        assert _hooks(train['teacher']) == {('output', FEATURES[teacher][0])}
        assert (kwargs['student_output_path'], kwargs['teacher_output_path']) == (FEATURES[student][0],
                                                                                  FEATURES[teacher][0])
        assert (kwargs['dist_factor'], kwargs['angle_factor'], kwargs['reduction']) == (25.0, 50.0, 'mean')
    else:
        assert _hooks(train['student']) == _taps([s_list[-1]]) and _hooks(train['teacher']) == _taps([t_list[-1]])
        assert (kwargs['student_module_path'], kwargs['student_module_io']) == (s_list[-1].path, s_list[-1].io)
        assert (kwargs['teacher_module_path'], kwargs['teacher_module_io']) == (t_list[-1].path, t_list[-1].io)
        assert kwargs['eps'] == 1e-7


def _trained_sample():
    """Each method on pairs taken in turn, so that the sample runs every pair (and so every architecture) once and
    each method on two or three pairs; the other recipes differ from these only in the values checked above."""
    return [f'cifar100/{METHODS[i % len(METHODS)]}/{s}_from_{t}' for i, (t, s) in enumerate(ROWS)]


TRAINED = _trained_sample()


@pytest.mark.parametrize('name', TRAINED)
def test_a_sample_trains_validates_and_tests_through_the_runner(name, tmp_path, monkeypatch, cifar100_env,
                                                                teacher_ckpts):
    method, _, teacher = _parse(name + '.yaml')
    monkeypatch.chdir(tmp_path)
    summary = run_train(RunDescription(recipe=name, device='cpu', seed=0, quiet=True, overrides=[
        *FAST, f'models.teacher_model.src_ckpt={teacher_ckpts(teacher)}']))
    assert summary['epochs_run'] == 1 and 0 <= summary['student_test_top1'] <= 100
    assert (tmp_path / summary['best_ckpt']).is_file()


# one per method, each on a pair that the runner's sample above trains with another method: a transposed-conv
# regressor from VGG's hooked input, all four of ResNet-50's maps pooled, VGG's maps, two embeddings
OWN_PIPELINE = ['cifar100/fitnet/vgg8_cifar_from_resnet50_cifar.yaml',
                'cifar100/at/mobilenetv2_cifar_from_resnet50_cifar.yaml',
                'cifar100/vid/vgg8_cifar_from_vgg13_cifar.yaml', 'cifar100/rkd/resnet8x4_from_resnet32x4.yaml',
                'cifar100/pkt/wrn_16_2_from_wrn_40_2.yaml']


@pytest.mark.parametrize('name', OWN_PIPELINE)
def test_recipes_take_a_step_in_torchdistills_own_pipeline(name, cifar100_env, teacher_ckpts):
    """torchdistill's model builders and its distillation box, unmodified: one training step changes the student and
    the trainable modules (FitNet's regressor, VID's regressors and scales), not the teacher."""
    method, _, teacher_key = _parse(name)
    config = load_yaml_file(str(RECIPES / name))
    config['train']['train_data_loader']['kwargs'].update(batch_size=4, num_workers=0)
    config['models']['teacher_model']['src_ckpt'] = str(teacher_ckpts(teacher_key))
    device = torch.device('cpu')
    teacher, student = torchdistill_runner_models(config, device)
    box = get_distillation_box(teacher, student, config['datasets'], config['train'], device, None, False, 1)
    box.pre_epoch_process(epoch=0)
    trained = list(box.student_model.parameters())
    assert len(trained) > len(list(student.parameters())) if method in ('fitnet', 'vid') else True
    before = [p.detach().clone() for p in trained]
    images, targets, supp = next(iter(box.train_data_loader))
    loss = box.forward_process(images, targets, supp)
    box.post_forward_process(loss=loss)
    assert torch.isfinite(loss)
    assert all(not torch.equal(a, b) for a, b in zip(before, trained, strict=True) if a.dim() > 1)
    assert all(p.grad is None for p in teacher.parameters())


PROBE = ['--set', 'train.pre_epoch_process=probe_epoch',
         '--set', 'dependencies=[{name: ttm_torchdistill}, {name: epoch_probe}]']


def _resume_checks(straight, resumed, after_one):
    assert straight['epoch'] == resumed['epoch'] == 2 and after_one['epoch'] == 1
    assert set(straight['aux']) == {'student_wrapper'}
    wrapper = straight['aux']['student_wrapper']
    assert any(k.startswith('regressor') for k in wrapper)
    assert_same_state(straight['model'], resumed['model'])
    assert_same_state(wrapper, resumed['aux']['student_wrapper'])
    assert any(not torch.equal(v, after_one['aux']['student_wrapper'][k]) for k, v in wrapper.items()
               if v.is_floating_point())  # the regressors trained in epoch 2


@pytest.mark.parametrize('method, wrapped', [('fitnet', 'regressor.bn.running_mean'),
                                             ('vid', 'regressors.0.log_scale')])
def test_killed_after_one_epoch_and_resumed_equals_an_uninterrupted_run(method, wrapped, tmp_path, cifar100_env,
                                                                         teacher_ckpts):
    """FitNet's regressor (conv, batch norm and its running statistics) and VID's regressors and log-scales live in
    the student's auxiliary wrapper: .last.pt holds them, --resume restores them, and a run killed (SIGKILL) at the
    start of epoch 2 ends as the uninterrupted one, bit for bit."""
    name = f'cifar100/{method}/resnet20_from_resnet56'
    args = ['train', name, '--device', 'cpu', '--seed', '0', *[a for o in FAST for a in ('--set', o)],
            '--set', 'train.num_epochs=2', *PROBE,
            '--set', f'models.teacher_model.src_ckpt={teacher_ckpts("resnet56")}']
    last = f'resource/ckpt/cifar100/{method}/cifar100-resnet20_from_resnet56.last.pt'

    def train(stage, folder):
        if stage != 'interrupted':
            return ok(run_cli([*args, *(['--resume'] if stage == 'resumed' else [])], folder))
        result = run_cli(args, folder, env=cli_env(PROBE_KILL_AT_EPOCH=2))
        assert result.returncode == -9, result.stderr[-3000:]
        return torch.load(folder / last, weights_only=False)

    runs = straight_and_resumed(tmp_path, train, folders=('straight', 'killed'))
    straight, resumed = runs.load(last)
    after_one = runs.results['interrupted']
    assert straight['epoch'] == resumed['epoch'] == 2 and after_one['epoch'] == 1
    assert set(straight['aux']) == {'student_wrapper'}
    wrapper = straight['aux']['student_wrapper']
    assert wrapped in wrapper
    assert_same_state(straight['model'], resumed['model'])
    assert_same_state(wrapper, resumed['aux']['student_wrapper'])
    assert not torch.equal(wrapper[wrapped], after_one['aux']['student_wrapper'][wrapped])  # trained in epoch 2


def test_vid_trains_on_two_cpu_ranks_with_one_set_of_regressors(tmp_path, cifar100_env, teacher_ckpts):
    """Regressors4ExactVID wraps the student and each regressor in DDP itself: after an epoch on different shards,
    both ranks hold the same student, regressors and log-scales (trained)."""
    fast = [a for o in FAST for a in ('--set', o)]
    probe = tmp_path / 'ranks'
    result = run_cli(['train', 'cifar100/vid/resnet20_from_resnet56', '--device', 'cpu', '--seed', '0', *fast,
                      '--set', 'train.num_epochs=2', *PROBE, '--summary', 's.json',
                      '--set', f'models.teacher_model.src_ckpt={teacher_ckpts("resnet56")}'],
                     tmp_path, env=cli_env(PROBE_RANK_DIR=probe), torchrun_nproc=2)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / 's.json').read_text())
    assert summary['world_size'] == 2 and summary['epochs_run'] == 2
    start, rank0, rank1 = (torch.load(probe / f, weights_only=False)  # the states before epochs 1 and 2
                           for f in ('epoch0_rank0.pt', 'epoch1_rank0.pt', 'epoch1_rank1.pt'))
    scales = [k for k in rank0 if k.endswith('log_scale')]
    assert len(scales) == 3 and any(k.startswith('model.module.') for k in rank0)
    weights = [k for k in rank0 if 'running_' not in k and 'num_batches_tracked' not in k]
    assert_same_state({k: rank0[k] for k in weights}, {k: rank1[k] for k in weights})
    assert all(not torch.equal(start[k], rank0[k]) for k in scales)


@pytest.mark.parametrize('recipe, grid, key', [
    ('cifar100/fitnet/resnet20_from_resnet56', 'beta=50,200', 'train.criterion.kwargs.sub_terms.fitnet.weight'),
    ('cifar100/pkt/resnet20_from_resnet56', 'beta=1e4,3e4', 'train.criterion.kwargs.sub_terms.pkt.weight'),
    ('cifar100/at/resnet20_from_resnet56', 'p=1.0,2.0', 'train.criterion.kwargs.sub_terms.at.criterion.kwargs.p'),
    ('cifar100/rkd/resnet20_from_resnet56', 'angle_factor=0,50',
     'train.criterion.kwargs.sub_terms.rkd.criterion.kwargs.angle_factor'),
])
def test_sweep_short_names_reach_the_feature_terms(recipe, grid, key, tmp_path, cifar100_env):
    """A feature method's `beta` is its term's weight (the benchmark's -b); its loss parameters have their names."""
    from ttm_torchdistill.sweep.plan import plan_sweep
    sweep = plan_sweep([recipe], [grid], [0], [], tmp_path / 'sweep')
    values = grid.split('=')[1].split(',')
    assert [o.value for run in sweep.runs for o in run.description.overrides if o.key == key] == values


def _load_train(path):
    train = load_yaml_file(str(path))['train']
    return train['teacher'], train['student'], train['criterion'], train['train_data_loader']


def test_new_recipe_writes_a_feature_method_as_the_shipped_recipes_do(tmp_path, cifar100_env, teacher_ckpts):
    """From a WTTM + CRD base (CRD's dataset wrapper, embeddings and term go) to another pair: the hooks, wrapper and
    terms are the shipped recipe's of that pair; --beta sets the term's weight."""
    teacher = teacher_ckpts('wrn_40_2')
    base = 'cifar100/wttm_crd/resnet20_from_resnet56'
    for method, beta in (('fitnet', None), ('vid', 2.0)):
        out = tmp_path / f'{method}.yaml'
        ok(run_cli(['new-recipe', '--from', base, '--teacher', f'wrn_40_2:{teacher}', '--student', 'wrn_16_2',
                    '--method', method, '-o', str(out), *(['--beta', str(beta)] if beta else [])], tmp_path))
        written = _load_train(out)
        shipped = _load_train(RECIPES / f'cifar100/{method}/wrn_16_2_from_wrn_40_2.yaml')
        assert written[:2] == shipped[:2] and 'dataset_wrapper' not in written[3]
        terms = written[2]['kwargs']['sub_terms']
        expected = shipped[2]['kwargs']['sub_terms']
        assert list(terms) == ['ce', method] and terms['ce'] == expected['ce']
        assert terms[method]['criterion'] == expected[method]['criterion']
        assert terms[method]['weight'] == (beta or WEIGHTS[method])
        text = out.read_text()
        assert f"'./resource/ckpt/cifar100/{method}/'" in text and '\npaper:' not in text


@pytest.mark.parametrize('args, message', [
    (['--student', 'resnet18'], "--method at: --student resnet18 has no known feature list (at hooks the entries of "
                                "the CRD benchmark's feature lists"),
    (['--student', 'resnet20', '--gamma', '0.5'], '--gamma: --method at has no parameter it sets'),
    (['--student', 'resnet20', '--beta', '-1'], "--beta -1: expected a finite number >= 0 (at: the weight of its "
                                                "feature term"),
])
def test_new_recipe_refuses_a_feature_method_it_cannot_write(args, message, tmp_path, teacher_ckpts):
    teacher = teacher_ckpts('resnet56')
    result = run_cli(['new-recipe', '--from', 'cifar100/kd/resnet20_from_resnet56', '--teacher',
                      f'resnet56:{teacher}', '--method', 'at', *args], tmp_path)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob('*.yaml'))


def test_the_docs_table_shows_the_five_methods_on_every_pair():
    """The CIFAR-100 page's feature-method table, made from the recipes' table, against the transcription above."""
    lines = hook('paper_tables').cifar100_feature().splitlines()
    assert lines[0] == '| student `_from_` teacher | FitNet | AT | VID | RKD | PKT |' and len(lines) == 2 + len(ROWS)
    for (t, s), top1 in ROWS.items():
        (line,) = [x for x in lines if x.startswith(f'| `{s}_from_{t}` |')]
        assert line.endswith(' | ' + ' | '.join(f'{top1[m]:.2f}' for m in METHODS) + ' |')


@pytest.mark.parametrize('role, io, paths, named', [
    ('teacher', 'output', "['layer1','layer2','layr3']", "'layr3' names no module of the teacher (ResNet4Cifar, whose "
                                                          'modules are avgpool, bn1, conv1, fc, layer1, layer2'),
    ('student', 'output', "['model.layer1','model.layer2','model.layer3','regressors.0','regressors.1','regressors.3']",
     "'regressors.3' names no module of the student (Regressors4ExactVID, whose modules are model, regressors)"),
])
def test_a_hook_path_that_names_no_module_is_one_line(role, io, paths, named, tmp_path, cifar100_env, teacher_ckpts):
    """A tired user's typo in a feature recipe's hooks: one line naming the key, the path and the modules there are
    (torchdistill itself would hook None and fail in a traceback)."""
    method = 'at' if role == 'teacher' else 'vid'
    result = cli(['train', f'cifar100/{method}/resnet20_from_resnet56', '--device', 'cpu', '--check',
                  *[a for o in FAST for a in ('--set', o)], '--set', f'train.{role}.forward_hook.{io}={paths}',
                  '--set', f'models.teacher_model.src_ckpt={teacher_ckpts("resnet56")}'], tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert f'train.{role}.forward_hook.{io}: {named}' in lines[0]


def test_new_recipe_writes_crd_and_itrd_from_a_base_of_their_own(tmp_path, cifar100_env, teacher_ckpts):
    """CRD's and ITRD's wrappers and sizes depend on more than a feature list: their recipes come from a base of the
    same method, whose terms are kept and resized; a base with other terms is refused in one line."""
    teacher = teacher_ckpts('wrn_40_2')
    for method in ('crd', 'itrd'):
        out = tmp_path / f'{method}.yaml'
        ok(cli(['new-recipe', '--from', f'cifar100/{method}/resnet20_from_resnet56', '--teacher',
                f'wrn_40_2:{teacher}', '--student', 'wrn_16_2', '--method', method, '-o', out], tmp_path))
        written, shipped = (load_yaml_file(str(p))['train'] for p in (
            out, RECIPES / f'cifar100/{method}/wrn_16_2_from_wrn_40_2.yaml'))
        assert written['criterion'] == shipped['criterion'] and written['student'] == shipped['student']
        assert f"'./resource/ckpt/cifar100/{method}/'" in out.read_text()
    refused = cli(['new-recipe', '--from', 'cifar100/wttm_crd/resnet20_from_resnet56', '--teacher',
                   f'wrn_40_2:{teacher}', '--student', 'wrn_16_2', '--method', 'crd', '-o', tmp_path / 'x.yaml'],
                  tmp_path)
    assert refused.returncode == 2 and 'has wttm (WTTMLoss), crd (CRDLoss)' in refused.stderr
    assert not (tmp_path / 'x.yaml').exists()


@pytest.mark.parametrize('recipe, grid, key', [
    ('cifar100/wttm_crd/resnet20_from_resnet56', 'mu=0.4,0.8', 'train.criterion.kwargs.sub_terms.crd.weight'),
    ('cifar100/wttm_crd/resnet20_from_resnet56', 'nce_temperature=0.05,0.1',
     'train.criterion.kwargs.sub_terms.crd.criterion.kwargs.temperature'),
    ('cifar100/wttm_itrd/resnet20_from_resnet56', 'mu=0.5,1', 'train.criterion.kwargs.sub_terms.itrd.weight'),
    ('cifar100/wttm_crd/resnet20_from_resnet56', 'beta=1,2',
     'train.criterion.kwargs.sub_terms.wttm.criterion.kwargs.beta'),
])
def test_sweep_short_names_reach_crd_and_itrd_and_leave_beta_to_wttm(recipe, grid, key, tmp_path, cifar100_env):
    from ttm_torchdistill.sweep.plan import plan_sweep
    sweep = plan_sweep([recipe], [grid], [0], [], tmp_path / 'sweep')
    values = grid.split('=')[1].split(',')
    assert [o.value for run in sweep.runs for o in run.description.overrides if o.key == key] == values
