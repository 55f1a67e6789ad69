"""CIFAR-100 recipes: generated from one table, the paper's values, and every one runs."""
import dataclasses
import json
import re
from pathlib import Path

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
from doc_blocks import block as doc_block
from doc_blocks import hook
from torchdistill.common.yaml_util import load_yaml_file
from torchdistill.core.distillation import get_distillation_box
from torchdistill.core.training import get_training_box
from torchdistill.models.registry import get_model

from ttm_torchdistill.description import RunDescription
from ttm_torchdistill.formats.metrics import FIELDS
from ttm_torchdistill.models.cifar import FEATURES
from ttm_torchdistill.paper import cifar100, write_recipes
from ttm_torchdistill.runner import run_train

FEATURE_METHODS = ('fitnet', 'at', 'vid', 'rkd', 'pkt')  # their recipes: test_feature_recipes.py
CIFAR = sorted(p.relative_to(RECIPES).as_posix() for p in (RECIPES / 'cifar100').rglob('*.yaml')
               if p.parent.name not in FEATURE_METHODS)

# Transcribed from the paper (NOTES.md), independently of the generator's table:
# teacher -> student | TTM | WTTM | WTTM+CRD (gamma/beta, Tables 8, 9) | w/o CE gamma | KD | TTM | WTTM | WTTM+CRD
# | WTTM w/o CE (top-1, Tables 1-4, 6)
PAPER_TABLE = """
wrn_40_2 wrn_16_2 .1/101 .1/4 .1/4 .2 74.92 76.23 76.37 76.61 75.11
wrn_40_2 wrn_40_1 .1/76 .1/3 .1/2 .5 73.54 74.32 74.58 74.94 73.16
resnet56 resnet20 .3/7 .3/1.5 .3/.6 .6 70.66 71.83 71.92 72.20 70.95
resnet110 resnet20 .2/8 .2/2 .2/1.4 .4 70.67 71.46 71.67 72.13 70.71
resnet110 resnet32 .1/33 .1/1.5 .2/1 .4 73.08 73.97 74.13 74.52 73.21
resnet32x4 resnet8x4 .1/100 .1/3 .2/4 .5 73.33 76.17 76.06 76.65 72.94
vgg13_cifar vgg8_cifar .1/45 .1/2.25 .2/4 .2 72.98 74.33 74.44 74.71 74.04
vgg13_cifar mobilenetv2_cifar .2/16 .2/3 .3/4.2 - 67.37 68.98 69.16 70.30 -
resnet50_cifar mobilenetv2_cifar .2/20 .2/5 .3/3 - 67.35 69.24 69.59 70.84 -
resnet50_cifar vgg8_cifar .1/70 .1/2 .1/3 - 73.81 74.87 74.82 75.30 -
resnet32x4 shufflenetv1_cifar .2/12 .2/1.4 .2/.4 - 74.07 74.18 74.37 75.82 -
resnet32x4 shufflenetv2_cifar .4/40 .4/16 .4/12 - 74.45 76.57 76.55 77.04 -
wrn_40_2 shufflenetv1_cifar .3/8 .3/3 .2/.16 - 74.83 75.39 75.42 76.86 -
"""
# teacher -> student | WTTM+ITRD gamma/beta (Tables 8, 9) | ITRD beta_mi, alpha_it (A.5) | top-1: CRD (Tables 1-4),
# ITRD, WTTM+ITRD (Tables 2, 4)
ITRD_TABLE = """
wrn_40_2 wrn_16_2 .3/6 1 1.01 75.48 76.12 76.65
wrn_40_2 wrn_40_1 .4/.08 1 1.01 74.14 75.18 75.34
resnet56 resnet20 .5/5 1 1.01 71.16 71.47 72.16
resnet110 resnet20 .3/1.5 1 1.01 71.46 71.99 72.20
resnet110 resnet32 .3/.015 1 1.01 73.48 74.26 74.36
resnet32x4 resnet8x4 .1/1.5 1 1.01 75.51 76.19 77.36
vgg13_cifar vgg8_cifar .1/.5 1 1.01 73.94 74.93 75.13
vgg13_cifar mobilenetv2_cifar .3/.03 1 1.5 69.73 70.39 70.70
resnet50_cifar mobilenetv2_cifar .2/.02 0 1.5 69.11 71.41 71.56
resnet50_cifar vgg8_cifar .1/1 0 1.5 74.30 75.71 76.00
resnet32x4 shufflenetv1_cifar .3/.6 1 1.5 75.11 76.91 77.03
resnet32x4 shufflenetv2_cifar .4/.8 1 1.5 75.65 77.40 77.68
wrn_40_2 shufflenetv1_cifar .1/.2 0 1.5 76.05 77.35 77.44
"""
# teacher -> student | top-1 DIST, DKD (Tables 1, 3; "-": n/a) | DKD's beta (its authors' configs, NOTES.md)
RIVALS_TABLE = """
wrn_40_2 wrn_16_2 75.51 76.24 6
wrn_40_2 wrn_40_1 74.73 74.81 6
resnet56 resnet20 71.75 71.97 2
resnet110 resnet20 71.65 - -
resnet110 resnet32 73.69 74.11 2
resnet32x4 resnet8x4 76.31 76.32 8
vgg13_cifar vgg8_cifar 73.89 74.68 6
vgg13_cifar mobilenetv2_cifar 68.50 69.71 6
resnet50_cifar mobilenetv2_cifar 68.66 70.35 8
resnet50_cifar vgg8_cifar 74.11 - -
resnet32x4 shufflenetv1_cifar 76.34 76.45 8
resnet32x4 shufflenetv2_cifar 77.35 77.07 8
wrn_40_2 shufflenetv1_cifar 76.40 76.70 8
"""
CE_TOP1 = {'wrn_40_2': 75.61, 'wrn_16_2': 73.26, 'wrn_40_1': 71.98, 'resnet56': 72.34, 'resnet110': 74.31,
           'resnet20': 69.06, 'resnet32': 71.14, 'resnet32x4': 79.42, 'resnet8x4': 72.50, 'vgg13_cifar': 74.64,
           'vgg8_cifar': 70.36, 'resnet50_cifar': 79.34, 'mobilenetv2_cifar': 64.6, 'shufflenetv1_cifar': 70.5,
           'shufflenetv2_cifar': 71.82}
SLOW_LR_STUDENTS = ('mobilenetv2_cifar', 'shufflenetv1_cifar', 'shufflenetv2_cifar')


def _paper_rows():
    rows = {}

    def gb(text):
        return tuple(float(v) for v in text.split('/'))
    for line in PAPER_TABLE.strip().splitlines():
        t, s, ttm, wttm, crd, wo_ce, *top1 = line.split()
        methods = ('kd', 'ttm', 'wttm', 'wttm_crd', 'wttm_wo_ce')
        rows[(t, s)] = {'ttm': gb(ttm), 'wttm': gb(wttm), 'wttm_crd': gb(crd),
                        'wo_ce_gamma': None if wo_ce == '-' else float(wo_ce),
                        'top1': {m: float(v) for m, v in zip(methods, top1, strict=True) if v != '-'}}
    for line in ITRD_TABLE.strip().splitlines():
        t, s, wttm_itrd, beta_mi, alpha_it, *top1 = line.split()
        rows[(t, s)].update(wttm_itrd=gb(wttm_itrd), beta_mi=float(beta_mi), alpha_it=float(alpha_it))
        rows[(t, s)]['top1'].update(zip(('crd', 'itrd', 'wttm_itrd'), map(float, top1), strict=True))
    for line in RIVALS_TABLE.strip().splitlines():
        t, s, dist, dkd, dkd_beta = line.split()
        rows[(t, s)]['top1'].update({'dist': float(dist)} | ({} if dkd == '-' else {'dkd': float(dkd)}))
        rows[(t, s)]['dkd_beta'] = None if dkd_beta == '-' else float(dkd_beta)
    return rows


PAPER = _paper_rows()


def _parse(name):
    method, file = name.split('/')[1:]
    if method == 'ce':
        return method, file[:-5], None
    student, teacher = re.fullmatch(r'(.+)_from_(.+)\.yaml', file).groups()
    return method, student, teacher


def test_committed_recipes_are_what_the_table_generates():
    assert write_recipes(RECIPES, check=True) == []


def test_an_itrd_value_of_the_table_reaches_both_itrd_recipes_of_its_pair(monkeypatch):
    index = next(i for i, p in enumerate(cifar100.PAIRS) if (p.teacher, p.student) == ('resnet32x4', 'resnet8x4'))
    pairs = list(cifar100.PAIRS)
    pairs[index] = dataclasses.replace(pairs[index], itrd_beta_mi=0.0)
    monkeypatch.setattr(cifar100, 'PAIRS', tuple(pairs))
    assert write_recipes(RECIPES, check=True) == ['cifar100/itrd/resnet8x4_from_resnet32x4.yaml',
                                                  'cifar100/wttm_itrd/resnet8x4_from_resnet32x4.yaml']
    assert 'beta_mi: 0.0\n' in cifar100.render_distill(pairs[index], 'wttm_itrd')


def test_the_suite_has_every_pair_method_and_architecture():
    expected = [f'cifar100/ce/{key}.yaml' for key in CE_TOP1]
    for (t, s), row in PAPER.items():
        methods = ['kd', 'ttm', 'wttm', 'wttm_crd', 'crd', 'itrd', 'wttm_itrd', 'dist']
        methods += ['wttm_wo_ce'] if row['wo_ce_gamma'] else []
        methods += ['dkd'] if row['dkd_beta'] else []  # n/a in the paper for two pairs: no DKD recipe
        expected += [f'cifar100/{m}/{s}_from_{t}.yaml' for m in methods]
    assert CIFAR == sorted(expected) and len(CIFAR) == 15 + 13 * 8 + 7 + 11
    assert not [n for n in CIFAR if n.startswith('cifar100/dkd/') and ('resnet20_from_resnet110' in n or
                                                                      'vgg8_cifar_from_resnet50_cifar' in n)]


def _cells(table: str, teacher: str, student: str) -> list[str]:
    (line,) = [x for x in table.splitlines() if x.startswith(f'| `{student}_from_{teacher}` |')]
    return [cell.strip() for cell in line.strip('|').split('|')[1:]]


def test_the_docs_tables_show_every_pairs_values_and_top1():
    """The CIFAR-100 page's three tables, made from the recipes' table, against the transcription above."""
    tables = hook('paper_tables')
    values, top1s, rivals = tables.cifar100(), tables.cifar100_top1(), tables.cifar100_rivals()
    for table in (values, top1s, rivals):
        assert len(table.splitlines()) == 2 + len(PAPER)
    for (t, s), row in PAPER.items():
        top1 = row['top1']
        assert _cells(values, t, s) == [
            *(f'{row[m][0]:g} / {row[m][1]:g}' for m in ('ttm', 'wttm', 'wttm_crd')),
            f"{row['wo_ce_gamma']:g}" if row['wo_ce_gamma'] else '—',
            f"{row['wttm_itrd'][0]:g} / {row['wttm_itrd'][1]:g}; {row['beta_mi']:g}",
            f"{row['dkd_beta']:g}" if row['dkd_beta'] else 'n/a']
        assert _cells(top1s, t, s) == [f'{top1[m]:.2f}' if m in top1 else '—'
                                       for m in ('kd', 'ttm', 'wttm', 'wttm_crd', 'wttm_wo_ce', 'wttm_itrd')]
        assert _cells(rivals, t, s) == [f'{top1[m]:.2f}' if m in top1 else 'n/a'
                                        for m in ('crd', 'itrd', 'dist', 'dkd')]


def _terms(config):
    return config['train']['criterion']['kwargs']['sub_terms']


@pytest.mark.parametrize('name', CIFAR)
def test_recipe_values_schedule_and_paths(name, cifar100_env):
    method, student, teacher = _parse(name)
    config = load_yaml_file(str(RECIPES / name))
    text = (RECIPES / name).read_text()
    train = config['train']
    assert config['dependencies'] == [{'name': 'ttm_torchdistill'}]
    assert train['num_epochs'] == 240
    assert train['train_data_loader']['kwargs']['batch_size'] == 64
    lr = 0.01 if student in SLOW_LR_STUDENTS else 0.05
    assert train['optimizer'] == {'key': 'SGD', 'kwargs': {'lr': lr, 'momentum': 0.9, 'weight_decay': 0.0005}}
    assert train['scheduler'] == {'key': 'MultiStepLR', 'kwargs': {'milestones': [150, 180, 210], 'gamma': 0.1}}
    train_set, test_set = config['datasets']['cifar100/train'], config['datasets']['cifar100/test']
    assert train_set.train and not test_set.train and train_set.root == str(cifar100_env)
    crop, flip, _, norm = train_set.transform.transforms
    assert (crop.size, crop.padding, flip.p) == ((32, 32), 4, 0.5)
    assert norm.mean == [0.5071, 0.4867, 0.4408] and norm.std == [0.2675, 0.2565, 0.2761]
    assert [type(t).__name__ for t in test_set.transform.transforms] == ['ToTensor', 'Normalize']
    # the benchmark's protocol: validation and test are the CIFAR-100 test set, and the header says so
    assert train['val_data_loader']['dataset_id'] == config['test']['test_data_loader']['dataset_id'] == 'cifar100/test'
    assert 'Validation and test loaders are both the CIFAR-100 TEST set' in text
    if method == 'ce':
        model = config['models']['model']
        assert model['key'] == student and model['kwargs'] == {'num_classes': 100}
        assert model['dst_ckpt'] == f'./resource/ckpt/cifar100/ce/cifar100-{student}.pt'
        assert config['paper']['top1'] == CE_TOP1[student]
        return
    models = config['models']
    assert models['teacher_model']['key'] == teacher and models['student_model']['key'] == student
    # the teacher is what the `ce` recipe of its architecture writes
    assert models['teacher_model']['src_ckpt'] == f'./resource/ckpt/cifar100/ce/cifar100-{teacher}.pt'
    experiment = f'cifar100-{student}_from_{teacher}'
    assert models['student_model']['dst_ckpt'] == f'./resource/ckpt/cifar100/{method}/{experiment}.pt'
    assert train['pre_epoch_process'] == 'pre_epoch_process_with_frozen_teacher'
    row = PAPER[(teacher, student)]
    assert config['paper']['top1'] == row['top1'][method]
    terms = _terms(config)
    if method == 'kd':
        (term,) = terms.values()
        kwargs = term['criterion']['kwargs']
        assert term['criterion']['key'] == 'KDLoss' and term['weight'] == 1.0
        # the benchmark's KD, 0.1 * CE + 0.9 * T^2 * KL, in torchdistill's KDLoss terms
        assert (kwargs['temperature'], kwargs['alpha'], kwargs['beta']) == (4.0, 0.1, 0.9)
        return
    if method in ('crd', 'wttm_crd'):
        _check_crd(train, terms, teacher, student)
    if method in ('itrd', 'wttm_itrd'):
        _check_itrd(train, terms, teacher, student, row)
    if method in ('crd', 'itrd', 'dist', 'dkd'):  # the comparison rows: cross entropy and one loss, no WTTM
        assert set(terms) == {'ce', method} and terms['ce']['weight'] == 1.0
        ce = terms['ce']
        assert ce['criterion'] == {'key': 'CrossEntropyLoss', 'kwargs': {'reduction': 'mean'}}
        assert ce['criterion_wrapper']['kwargs']['input'] == {'is_from_teacher': False, 'module_path': '.',
                                                             'io': 'output'}
        assert ce['criterion_wrapper']['kwargs']['target'] == {'uses_label': True}
        if method in ('dist', 'dkd'):
            _check_rival(method, terms[method], row, text)
        return
    main = terms['ttm' if method == 'ttm' else 'wttm']
    kwargs = main['criterion']['kwargs']
    assert main['criterion']['key'] == ('TTMLoss' if method == 'ttm' else 'WTTMLoss') and main['weight'] == 1.0
    if method == 'wttm_wo_ce':
        assert (kwargs['gamma'], kwargs['beta'], kwargs['alpha']) == (row['wo_ce_gamma'], 1.0, 0.0)
        assert 'beta = 1 is our choice' in text
    else:
        assert (kwargs['gamma'], kwargs['beta'], kwargs['alpha']) == (*row[method], 1.0)
    second = {'wttm_crd': 'crd', 'wttm_itrd': 'itrd'}.get(method)
    assert set(terms) == {'ttm' if method == 'ttm' else 'wttm'} | ({second} if second else set())
    if second is None:
        assert 'dataset_wrapper' not in train['train_data_loader'] and 'auxiliary_model_wrapper' not in train['student']


def _check_rival(method, term, row, text):
    """DIST's official CIFAR-100 setting, DKD's with its authors' per-pair beta; on both models' logits."""
    kwargs = term['criterion']['kwargs']
    assert term['weight'] == 1.0
    assert {k: kwargs.pop(k) for k in ('student_module_path', 'teacher_module_path')} == {
        'student_module_path': '.', 'teacher_module_path': '.'}
    assert kwargs.pop('student_module_io') == kwargs.pop('teacher_module_io') == 'output'
    if method == 'dist':
        assert term['criterion']['key'] == 'ExactDISTLoss' and kwargs == {'beta': 2.0, 'gamma': 2.0, 'tau': 4.0}
        assert 'not gathered across GPUs' in text
    else:
        assert term['criterion']['key'] == 'DKDLoss'
        assert kwargs == {'alpha': 1.0, 'beta': row['dkd_beta'], 'temperature': 4.0, 'warmup_epochs': 20}
        assert 'warm-up over the first 20 epochs' in text
    assert f'copies this number from the {method.upper()} paper' in text


def _check_crd(train, terms, teacher, student):
    crd = terms['crd']
    assert crd['criterion']['key'] == 'CRDLoss' and crd['weight'] == 0.8
    c = crd['criterion']['kwargs']
    assert (c['num_negative_samples'], c['input_size'], c['temperature'], c['momentum']) == (16384, 128, 0.07, 0.5)
    assert c['num_samples'] == c['output_size'] == 50000
    assert train['student']['wrapper'] is None  # Linear4CRD wraps in DDP itself
    wrapper = train['train_data_loader']['dataset_wrapper']
    assert wrapper['key'] == 'CRDDatasetWrapper' and wrapper['kwargs']['num_negative_samples'] == 16384
    for role, key in (('teacher', teacher), ('student', student)):
        aux = train[role]['auxiliary_model_wrapper']['kwargs']
        path, size = FEATURES[key]
        assert aux['input_module_path'] == f'model.{path}' and aux['linear_kwargs']['in_features'] == size
        assert aux['linear_kwargs']['out_features'] == 128


def _check_itrd(train, terms, teacher, student, row):
    itrd = terms['itrd']
    assert itrd['criterion']['key'] == 'ITRDLoss' and itrd['weight'] == 1.0  # mu = 1 (Eq. 23)
    k = itrd['criterion']['kwargs']
    assert (k['beta_corr'], k['beta_mi'], k['alpha_it']) == (2.0, row['beta_mi'], row['alpha_it'])
    (t_path, t_size), (s_path, s_size) = FEATURES[teacher], FEATURES[student]
    assert (k['student_module_path'], k['student_module_io']) == (f'model.{s_path}', 'output')
    assert (k['teacher_module_path'], k['teacher_module_io']) == (t_path, 'output')
    assert (k['student_feature_size'], k['teacher_feature_size'], k['student_embed_module_path']) == (s_size, t_size,
                                                                                                       'embed')
    aux = train['student']['auxiliary_model_wrapper']
    assert aux == {'key': 'Linear4ITRD', 'kwargs': {'input_module_path': f'model.{s_path}', 'in_features': s_size,
                                                    'out_features': t_size}}
    assert train['student']['forward_hook']['output'] == [f'model.{s_path}', 'embed']
    assert train['student']['wrapper'] is None  # Linear4ITRD wraps in DDP itself
    assert train['teacher']['forward_hook']['output'] == [t_path] and train['teacher']['requires_grad'] is False
    assert 'auxiliary_model_wrapper' not in train['teacher'] and 'dataset_wrapper' not in train['train_data_loader']


def _trained_sample() -> list[str]:
    """Every architecture trained alone (the 15 ``ce`` recipes), and each distillation method on two pairs, taken in
    turn so that together the methods run all 13 pairs: each method, each student and each teacher runs; the other
    recipes of a method differ from these only in numbers, which test_recipe_values_schedule_and_paths checks. (Every
    DIST and DKD recipe trains in test_dist_dkd_recipes.py.)"""
    ce = [name for name in CIFAR if name.startswith('cifar100/ce/')]
    pairs = sorted({name.split('/')[2] for name in CIFAR if not name.startswith('cifar100/ce/')})
    methods = sorted({name.split('/')[1] for name in CIFAR} - {'ce', 'dist', 'dkd'})
    chosen, turn = [], 0
    for method in methods:
        have = [p for p in pairs if f'cifar100/{method}/{p}' in CIFAR]
        for _ in range(2):
            while pairs[turn % len(pairs)] not in have:
                turn += 1
            chosen.append(f'cifar100/{method}/{pairs[turn % len(pairs)]}')
            turn += 1
    return ce + chosen


TRAINED = _trained_sample()


def test_the_trained_sample_covers_every_method_pair_and_architecture():
    assert {name.split('/')[1] for name in TRAINED} == {name.split('/')[1] for name in CIFAR} - {'dist', 'dkd'}
    assert {name.split('/')[2] for name in TRAINED} == {name.split('/')[2] for name in CIFAR}
    roles = [_parse(name) for name in TRAINED]
    assert {s for _, s, _ in roles} | {t for _, _, t in roles if t} == set(CE_TOP1)


@pytest.mark.parametrize('name', TRAINED)
def test_cifar_recipes_train_validate_and_test_through_the_runner(name, tmp_path, monkeypatch, cifar100_env,
                                                                  teacher_ckpts):
    method, _, teacher = _parse(name)
    monkeypatch.chdir(tmp_path)
    overrides = list(FAST)
    if teacher:
        overrides.append(f'models.teacher_model.src_ckpt={teacher_ckpts(teacher)}')
    summary = run_train(RunDescription(recipe=name, overrides=overrides, device='cpu', seed=0, quiet=True))
    assert summary['epochs_run'] == 1 and 0 <= summary['student_test_top1'] <= 100
    assert (tmp_path / summary['best_ckpt']).is_file()
    assert summary['paper_top1'] == load_yaml_file(str(RECIPES / name))['paper']['top1']
    assert (summary['teacher_test_top1'] is None) == (teacher is None)


@pytest.mark.parametrize('name, keys', [
    ('cifar100/wttm_itrd/resnet8x4_from_resnet32x4.yaml',
     ['cross_entropy', 'distill', 'divergence', 'u_gamma', 'student_entropy', 'corr', 'mi', 'loss.wttm', 'loss.itrd']),
    ('cifar100/wttm_crd/resnet20_from_resnet56.yaml',
     ['cross_entropy', 'distill', 'divergence', 'u_gamma', 'student_entropy', 'loss.wttm', 'loss.crd']),
    ('cifar100/itrd/resnet8x4_from_resnet32x4.yaml', ['corr', 'mi', 'loss.ce', 'loss.itrd']),
    ('cifar100/kd/resnet8x4_from_resnet32x4.yaml', []),
])
def test_every_loss_term_reports_its_parts_per_epoch(name, keys, tmp_path, monkeypatch, cifar100_env, teacher_ckpts):
    """The trainer logs what each term's loss reports (TTM/WTTM's and ITRD's parts) and, with several terms, each
    term's value (CRD's too), without knowing their classes; TensorBoard and plot draw what the record holds."""
    _, _, teacher = _parse(name)
    monkeypatch.chdir(tmp_path)
    overrides = [*FAST, 'train.num_epochs=2', f'models.teacher_model.src_ckpt={teacher_ckpts(teacher)}',
                 *(['train.criterion.kwargs.sub_terms.crd.criterion.kwargs.num_samples=8'] if 'crd' in name else [])]
    summary = run_train(RunDescription(recipe=name, overrides=overrides, device='cpu', seed=0, quiet=True,
                                       test=False))
    records = [json.loads(line) for line in Path(summary['metrics']).read_text().splitlines()]
    assert [r['epoch'] for r in records] == [1, 2]
    extra = [k for k in records[0] if k not in FIELDS]
    assert extra == keys
    assert all(isinstance(r[k], float) for r in records for k in keys)


SAMPLE = ['cifar100/ce/wrn_40_2.yaml', 'cifar100/kd/resnet8x4_from_resnet32x4.yaml',
          'cifar100/ttm/mobilenetv2_cifar_from_vgg13_cifar.yaml',
          'cifar100/wttm/shufflenetv2_cifar_from_resnet32x4.yaml',
          'cifar100/wttm_crd/shufflenetv1_cifar_from_wrn_40_2.yaml', 'cifar100/wttm_crd/resnet20_from_resnet56.yaml',
          'cifar100/wttm_wo_ce/vgg8_cifar_from_vgg13_cifar.yaml', 'cifar100/crd/resnet8x4_from_resnet32x4.yaml',
          'cifar100/itrd/mobilenetv2_cifar_from_resnet50_cifar.yaml',
          'cifar100/wttm_itrd/wrn_40_1_from_wrn_40_2.yaml', 'cifar100/dist/resnet8x4_from_resnet32x4.yaml',
          'cifar100/dkd/wrn_16_2_from_wrn_40_2.yaml']


@pytest.mark.parametrize('name', SAMPLE)
def test_recipes_run_unmodified_in_torchdistills_own_pipeline(name, cifar100_env, teacher_ckpts):
    """torchdistill's loader and model builders (src_ckpt included), then one step of its boxes."""
    method, student_key, teacher_key = _parse(name)
    config = load_yaml_file(str(RECIPES / name))
    device = torch.device('cpu')
    config['train']['train_data_loader']['kwargs'].update(batch_size=4, num_workers=0)
    if method == 'ce':
        model = get_model(student_key, **config['models']['model']['kwargs'])
        box = get_training_box(model, config['datasets'], config['train'], device, None, False, 1)
        images, targets, supp = next(iter(box.train_data_loader))
        loss = box.forward_process(images, targets, supp)
        assert torch.isfinite(loss)
        return
    config['models']['teacher_model']['src_ckpt'] = str(teacher_ckpts(teacher_key))
    teacher, student = torchdistill_runner_models(config, device)
    released = torch.load(teacher_ckpts(teacher_key))['model']
    for key, value in teacher.state_dict().items():  # the released-checkpoint format loaded strictly
        assert torch.equal(value, released[key]), key
    box = get_distillation_box(teacher, student, config['datasets'], config['train'], device, None, False, 1)
    box.pre_epoch_process(epoch=0)
    bn = next(m for m in teacher.modules() if isinstance(m, torch.nn.BatchNorm2d))
    running_mean = bn.running_mean.clone()
    images, targets, supp = next(iter(box.train_data_loader))
    if method in ('crd', 'wttm_crd'):
        assert supp['contrast_idx'].shape == (4, 16385)  # the positive + 16384 negatives per sample
    before = [p.detach().clone() for p in student.parameters()]
    embed = box.teacher_model.normalizer.linear.weight if method in ('crd', 'wttm_crd') else None
    if method in ('itrd', 'wttm_itrd'):  # the student's optimizer trains ITRD's embedding like the student
        embed = box.student_model.embed.weight
        (group,) = [g for g in box.optimizer.param_groups if any(p is embed for p in g['params'])]
        assert (group['lr'], group['weight_decay']) == (config['train']['optimizer']['kwargs']['lr'], 0.0005)
        assert all(any(p is q for q in group['params']) for p in student.parameters())
    embed_before = embed.detach().clone() if embed is not None else None
    loss = box.forward_process(images, targets, supp)
    box.post_forward_process(loss=loss)
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))
    torch.testing.assert_close(bn.running_mean, running_mean)  # the frozen teacher's statistics do not drift
    assert all(p.grad is None for p in teacher.parameters())
    if embed is not None:  # CRD trains the teacher's embedding (not the teacher), ITRD the student's
        assert not torch.equal(embed, embed_before)


def test_wttm_crd_resume_restores_the_embeddings_and_memory_bank(tmp_path, cifar100_env, teacher_ckpts):
    """CRD trains more than the student (both embeddings, the memory bank): a resumed run must equal an
    uninterrupted one in all of it."""
    name = 'cifar100/wttm_crd/resnet20_from_resnet56'
    common = [*FAST, f'models.teacher_model.src_ckpt={teacher_ckpts("resnet56")}']
    last = 'resource/ckpt/cifar100/wttm_crd/cifar100-resnet20_from_resnet56.last.pt'

    def train(stage, folder):
        epochs = 1 if stage == 'interrupted' else 2
        run_train(RunDescription(recipe=name, overrides=[*common, f'train.num_epochs={epochs}'], device='cpu', seed=0,
                                 quiet=True, resume=stage == 'resumed', test=False))

    straight, resumed = straight_and_resumed(tmp_path, train).load(last)
    assert resumed['epoch'] == straight['epoch'] == 2
    assert set(straight['aux']) == {'student_wrapper', 'teacher_wrapper', 'loss.crd'}
    for part in ('student_wrapper', 'teacher_wrapper', 'loss.crd'):
        for key, value in straight['aux'][part].items():
            assert torch.equal(value, resumed['aux'][part][key]), (part, key)
    for key, value in straight['model'].items():
        assert torch.equal(value, resumed['model'][key]), key


def test_the_docs_held_out_validation_split_builds_and_trains(tmp_path, monkeypatch, cifar100_env, teacher_ckpts):
    """Tuning a new pair: the datasets block that validates on held-out training images (sizes scaled down to the
    generated 8 training images: 6 train, 2 held out)."""
    block = doc_block('heldout_validation')
    assert block.startswith('datasets:\n  &cifar100_train cifar100/train: !import_call\n    _name')
    block = block[:block.index('# ... models as in the recipe ...')]
    block = block.replace('[0, 45000]', '[0, 6]').replace('[45000, 50000]', '[6, 8]')
    recipe = (RECIPES / 'cifar100/wttm/resnet20_from_resnet56.yaml').read_text()
    recipe = recipe[:recipe.index('datasets:')] + block + recipe[recipe.index('\nmodels:') + 1:]
    val = recipe.index('  val_data_loader:\n    dataset_id: *cifar100_test')
    recipe = recipe[:val] + recipe[val:].replace('*cifar100_test', '*cifar100_heldout', 1)
    path = tmp_path / 'heldout.yaml'
    path.write_text(recipe)
    monkeypatch.chdir(tmp_path)
    summary = run_train(RunDescription(recipe=str(path), device='cpu', seed=0, quiet=True, overrides=[
        *FAST, f'models.teacher_model.src_ckpt={teacher_ckpts("resnet56")}']))
    assert summary['epochs_run'] == 1
    config = load_yaml_file(str(path))
    train, heldout, test = (config['datasets'][f'cifar100/{k}'] for k in ('train', 'heldout', 'test'))
    assert (len(train), len(heldout), len(test)) == (6, 2, 4)
    assert list(heldout.indices) == [6, 7] and heldout.dataset.train and not test.train
    assert [type(t).__name__ for t in heldout.dataset.transform.transforms] == ['ToTensor', 'Normalize']
    assert config['train']['val_data_loader']['dataset_id'] == 'cifar100/heldout'
    assert config['test']['test_data_loader']['dataset_id'] == 'cifar100/test'


def test_wttm_crd_trains_on_two_cpu_ranks(tmp_path, cifar100_env, teacher_ckpts):
    """Linear4CRD wraps the student and its embedding in DDP itself: the runner must not wrap it again."""
    fast = [a for o in FAST for a in ('--set', o)]
    result = run_cli(['train', 'cifar100/wttm_crd/resnet20_from_resnet56', '--device', 'cpu', '--seed', '0', *fast,
                      '--set', f'models.teacher_model.src_ckpt={teacher_ckpts("resnet56")}', '--summary', 's.json'],
                     tmp_path, torchrun_nproc=2)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / 's.json').read_text())
    assert summary['world_size'] == 2 and summary['epochs_run'] == 1


PROBE = ['--set', 'train.pre_epoch_process=probe_epoch',
         '--set', 'dependencies=[{name: ttm_torchdistill}, {name: epoch_probe}]']


def test_wttm_itrd_killed_after_one_epoch_and_resumed_equals_an_uninterrupted_run(tmp_path, cifar100_env,
                                                                                   teacher_ckpts):
    """ITRD's embedding lives in the student's Linear4ITRD wrapper: .last.pt holds it and --resume restores it.
    wrn_40_2 -> wrn_40_1 has feature sizes 128 and 64, so the embedding enters both ITRD terms."""
    name = 'cifar100/wttm_itrd/wrn_40_1_from_wrn_40_2'
    args = ['train', name, '--device', 'cpu', '--seed', '0', *[a for o in FAST for a in ('--set', o)],
            '--set', 'train.num_epochs=2', *PROBE,
            '--set', f'models.teacher_model.src_ckpt={teacher_ckpts("wrn_40_2")}']
    last = 'resource/ckpt/cifar100/wttm_itrd/cifar100-wrn_40_1_from_wrn_40_2.last.pt'

    def train(stage, folder):
        if stage != 'interrupted':
            return ok(run_cli([*args, *(['--summary', 'summary.json'] if stage == 'straight' else ['--resume'])],
                              folder))
        result = run_cli(args, folder, env=cli_env(PROBE_KILL_AT_EPOCH=2))
        assert result.returncode == -9, result.stderr[-3000:]  # SIGKILL at the start of epoch 2
        after_one = torch.load(folder / last, weights_only=False)
        assert after_one['epoch'] == 1
        return after_one

    runs = straight_and_resumed(tmp_path, train, folders=('straight', 'killed'))
    straight, after_one = runs.straight, runs.results['interrupted']
    straight_ckpt, resumed = runs.load(last)
    assert straight_ckpt['epoch'] == resumed['epoch'] == 2
    assert set(straight_ckpt['aux']) == {'student_wrapper'}  # ITRDLoss itself holds no state
    wrapper = straight_ckpt['aux']['student_wrapper']
    assert wrapper['embed.weight'].shape == (128, 64) and wrapper['embed.bias'].shape == (128,)
    assert_same_state(straight_ckpt['model'], resumed['model'])
    assert_same_state(wrapper, resumed['aux']['student_wrapper'])
    assert not torch.equal(after_one['aux']['student_wrapper']['embed.weight'], wrapper['embed.weight'])
    # `ttm-distill table` puts the run beside the paper's WTTM + ITRD number (Table 2)
    table = ok(cli(['table', straight / 'summary.json'], tmp_path)).stdout
    (row,) = [line for line in table.splitlines() if name in line]
    assert '| 75.34 |' in row


def test_wttm_itrd_trains_on_two_cpu_ranks_with_one_embedding(tmp_path, cifar100_env, teacher_ckpts):
    """Linear4ITRD wraps the student and the embedding in DDP itself: after an epoch on different shards, both
    ranks hold the same student weights and the same (trained) embedding."""
    fast = [a for o in FAST for a in ('--set', o)]
    probe = tmp_path / 'ranks'
    result = run_cli(['train', 'cifar100/wttm_itrd/resnet20_from_resnet56', '--device', 'cpu', '--seed', '0', *fast,
                      '--set', 'train.num_epochs=2', *PROBE, '--summary', 's.json',
                      '--set', f'models.teacher_model.src_ckpt={teacher_ckpts("resnet56")}'],
                     tmp_path, env=cli_env(PROBE_RANK_DIR=probe), torchrun_nproc=2)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / 's.json').read_text())
    assert summary['world_size'] == 2 and summary['epochs_run'] == 2
    start, rank0, rank1 = (torch.load(probe / f, weights_only=False)
                           for f in ('epoch0_rank0.pt', 'epoch1_rank0.pt', 'epoch1_rank1.pt'))
    assert 'embed.module.weight' in rank0 and any(k.startswith('model.module.') for k in rank0)
    # the same weights; batch-norm running statistics stay per rank (DDP broadcasts them before each forward)
    weights = [k for k in rank0 if 'running_' not in k and 'num_batches_tracked' not in k]
    assert_same_state({k: rank0[k] for k in weights}, {k: rank1[k] for k in weights})
    assert not torch.equal(start['embed.module.weight'], rank0['embed.module.weight'])
