"""Shipped recipes: they load, run through torchdistill's boxes, and say what the paper says."""
import os
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import FAST, RECIPES, make_image_folder, torchdistill_runner_models
from doc_blocks import hook
from torch.nn.parallel import DistributedDataParallel
from torchdistill.common.yaml_util import load_yaml_file
from torchdistill.core.distillation import get_distillation_box
from torchdistill.core.training import get_training_box
from torchdistill.models.official import get_image_classification_model
from torchdistill.models.registry import get_model

from ttm_torchdistill.description import RunDescription
from ttm_torchdistill.runner import run_train

ALL = sorted(p.relative_to(RECIPES).as_posix() for p in RECIPES.rglob('*.yaml'))
# CIFAR-100: tests/test_cifar_recipes.py; the DeiT recipes (timm models, at reduced size): tests/test_deit_recipes.py;
# the feature-based rivals CRD, ReviewKD and ITRD on ImageNet: tests/test_imagenet_rivals.py
DEIT = [name for name in ALL if '/deit_tiny' in name]
FEATURE_RIVALS = [name for name in ALL if name.startswith('ilsvrc2012/') and name.split('/')[1] in ('crd', 'reviewkd',
                                                                                                     'itrd')]
NOT_CIFAR = [name for name in ALL if not name.startswith('cifar100/') and name not in DEIT + FEATURE_RIVALS]
IMAGENET = [name for name in ALL if name.startswith('ilsvrc2012/') and name not in DEIT + FEATURE_RIVALS]
PAPER = {  # Table 10 hyperparameters; the TTM beta follows Eq. (19) with lambda = 0.5 (see the recipe header)
    'resnet18_from_resnet34': dict(teacher='resnet34', student='resnet18', gamma=0.8, beta=1.6, ttm_beta=1.25,
                                   weights=torchvision.models.ResNet34_Weights.IMAGENET1K_V1,
                                   top1={'wttm': 72.19, 'kd': 70.66, 'ttm': None, 'dist': 72.07, 'dkd': 71.70},
                                   dkd_beta=0.5),
    'mobilenet_v1_from_resnet50': dict(teacher='resnet50', student='mobilenet_v1', gamma=0.7, beta=3.5,
                                       ttm_beta=1.43, weights=torchvision.models.ResNet50_Weights.IMAGENET1K_V1,
                                       top1={'wttm': 73.09, 'kd': 70.50, 'ttm': None, 'dist': 73.24, 'dkd': 72.05},
                                       dkd_beta=2.0),
}
TABLE7 = {  # ResNet-18 from better teachers, WTTM with gamma 0.8, beta 1.6
    'resnet18_from_resnet50': (torchvision.models.ResNet50_Weights.IMAGENET1K_V1, 72.26),
    'resnet18_from_resnet101': (torchvision.models.ResNet101_Weights.IMAGENET1K_V1, 72.34),
    'resnet18_from_resnet152': (torchvision.models.ResNet152_Weights.IMAGENET1K_V1, 72.39),
}
for _pair, (_weights, _top1) in TABLE7.items():
    PAPER[_pair] = dict(teacher=_pair.rsplit('_', 1)[1], student='resnet18', gamma=0.8, beta=1.6, weights=_weights,
                        top1={'wttm': _top1})


def test_the_thirteen_imagenet_recipes_exist():
    expected = [f'ilsvrc2012/{m}/{p}.yaml' for m in ('kd', 'ttm', 'wttm', 'dist', 'dkd') for p in list(PAPER)[:2]]
    expected += [f'ilsvrc2012/wttm/{p}.yaml' for p in TABLE7]
    assert IMAGENET == sorted(expected)


@pytest.fixture
def imagenet_env(monkeypatch, image_root, torch_home):
    monkeypatch.setenv('ILSVRC2012_ROOT', str(image_root))
    monkeypatch.setenv('TORCH_HOME', str(torch_home))


def _loaded(name):
    return load_yaml_file(str(RECIPES / name))


def _kinds(transform):
    return [type(t).__name__ for t in transform.transforms]


@pytest.mark.parametrize('name', IMAGENET)
def test_imagenet_recipe_values(name, imagenet_env, image_root):
    method, pair = name.split('/')[1], name.split('/')[2][:-5]
    paper = PAPER[pair]
    config = _loaded(name)
    text = (RECIPES / name).read_text()
    assert config['dependencies'] == [{'name': 'ttm_torchdistill'}]
    assert config['paper']['top1'] == paper['top1'][method] and 'Zheng & Yang' in config['paper']['source']
    teacher, student = config['models']['teacher_model'], config['models']['student_model']
    assert teacher['key'] == paper['teacher']
    assert teacher['kwargs'] == {'num_classes': 1000, 'weights': paper['weights']}
    assert student['key'] == paper['student'] and student['kwargs'] == {'num_classes': 1000}
    assert not student.get('src_ckpt')
    assert student['dst_ckpt'] == f'./resource/ckpt/ilsvrc2012/{method}/ilsvrc2012-{pair}.pt'
    train = config['train']
    assert train['num_epochs'] == 100
    assert train['teacher']['requires_grad'] is False and 'wrapper' not in train['teacher']
    assert train['pre_epoch_process'] == 'pre_epoch_process_with_frozen_teacher'
    assert train['student']['wrapper'] == 'DistributedDataParallel' and train['student']['requires_grad'] is True
    assert train['optimizer'] == {'key': 'SGD', 'kwargs': {'lr': 0.1, 'momentum': 0.9, 'weight_decay': 0.0001}}
    assert train['scheduler'] == {'key': 'MultiStepLR', 'kwargs': {'milestones': [30, 60, 90], 'gamma': 0.1}}
    batch, gpus = train['train_data_loader']['kwargs']['batch_size'], 8
    assert batch * gpus == 256 and f'{gpus} GPUs x {batch} = 256' in text
    assert 'lr = 0.1 * (N * batch_size) / 256' in text
    terms = train['criterion']['kwargs']['sub_terms']
    assert train['criterion']['key'] == 'WeightedSumLoss'
    if method in ('dist', 'dkd'):  # cross entropy (weight 1) and the method's term; the header says whose numbers
        assert list(terms) == ['ce', method] and terms['ce']['weight'] == 1.0
        assert terms['ce']['criterion'] == {'key': 'CrossEntropyLoss', 'kwargs': {'reduction': 'mean'}}
        kwargs = terms[method]['criterion']['kwargs']
        expected = ({'beta': 2.0, 'gamma': 2.0, 'tau': 1.0} if method == 'dist' else
                    {'alpha': 1.0, 'beta': paper['dkd_beta'], 'temperature': 1.0, 'warmup_epochs': 1})
        assert {k: kwargs[k] for k in expected} == expected and terms[method]['weight'] == 1.0
        assert 'trained with its own set-up' in text
    else:
        (term,) = terms.values()
        kwargs = term['criterion']['kwargs']
        assert term['weight'] == 1.0
        if method == 'kd':
            assert term['criterion']['key'] == 'KDLoss'
            assert kwargs['temperature'] == 1.0 and kwargs['alpha'] == 0.5
        else:
            assert term['criterion']['key'] == {'wttm': 'WTTMLoss', 'ttm': 'TTMLoss'}[method]
            beta = paper['beta'] if method == 'wttm' else paper['ttm_beta']
            assert (kwargs['gamma'], kwargs['beta'], kwargs['alpha']) == (paper['gamma'], beta, 1.0)
            assert kwargs['reduction'] == 'batchmean'
    if method == 'ttm':
        assert 'tunes no TTM on ImageNet' in text and 'Eq. (19)' in text
    datasets = config['datasets']
    train_set, val_set = datasets['ilsvrc2012/train'], datasets['ilsvrc2012/val']
    assert train_set.root == str(image_root / 'train') and val_set.root == str(image_root / 'val')
    assert _kinds(train_set.transform) == ['RandomResizedCrop', 'RandomHorizontalFlip', 'ToTensor', 'Normalize']
    assert _kinds(val_set.transform) == ['Resize', 'CenterCrop', 'ToTensor', 'Normalize']
    crop, flip, _, norm = train_set.transform.transforms
    assert list(crop.size) == [224, 224] and flip.p == 0.5
    resize, center, _, val_norm = val_set.transform.transforms
    assert resize.size == 256 and list(center.size) == [224, 224]
    for n in (norm, val_norm):
        assert n.mean == [0.485, 0.456, 0.406] and n.std == [0.229, 0.224, 0.225]
    assert train['val_data_loader']['dataset_id'] == 'ilsvrc2012/val'
    assert config['test']['test_data_loader']['dataset_id'] == 'ilsvrc2012/val'


def test_dataset_root_defaults_to_home_datasets(monkeypatch, tmp_path, torch_home):
    make_image_folder(tmp_path / 'datasets' / 'ilsvrc2012')
    monkeypatch.delenv('ILSVRC2012_ROOT', raising=False)
    monkeypatch.setenv('HOME', str(tmp_path))
    config = _loaded('ilsvrc2012/wttm/resnet18_from_resnet34.yaml')
    assert config['datasets']['ilsvrc2012/train'].root == str(tmp_path / 'datasets/ilsvrc2012/train')


TRAINED = [name for name in NOT_CIFAR if not name.startswith('ilsvrc2012/')] + [
    f'ilsvrc2012/{name}.yaml' for name in ('kd/resnet18_from_resnet34', 'kd/mobilenet_v1_from_resnet50',
                                           'ttm/resnet18_from_resnet34', 'wttm/mobilenet_v1_from_resnet50',
                                           'wttm/resnet18_from_resnet152')]
"""the demo recipes, and the ImageNet ones sampled: every method, student and teacher family (ResNet-34, -50 and
-152); the other four differ from these in numbers and a teacher's depth, which test_imagenet_recipe_values checks"""


def test_the_trained_sample_covers_every_imagenet_method_student_and_teacher_family():
    """(the DIST and DKD recipes all train in test_dist_dkd_recipes.py)"""
    trained = [name.split('/')[1:] for name in TRAINED if name.startswith('ilsvrc2012/')]
    assert {m for m, _ in trained} == {name.split('/')[1] for name in IMAGENET} - {'dist', 'dkd'}
    assert {p.split('_from_')[0] for _, p in trained} == {name.split('/')[2].split('_from_')[0] for name in IMAGENET}
    assert all(name in NOT_CIFAR for name in TRAINED)


@pytest.mark.parametrize('name', TRAINED)
def test_recipes_train_validate_and_test_through_the_runner(name, tmp_path, monkeypatch, image_root, torch_home):
    """One epoch of a few iterations on tiny data, the validation pass and the test pass."""
    monkeypatch.setenv('ILSVRC2012_ROOT', str(image_root))
    monkeypatch.setenv('TORCH_HOME', str(torch_home))
    monkeypatch.chdir(tmp_path)
    _train_missing_teacher(name)
    summary = run_train(RunDescription(recipe=name, overrides=_fast(name), device='cpu', seed=0,
                                      summary=str(tmp_path / 'summary.json')))
    assert summary['epochs_run'] == 1
    assert 0 <= summary['student_test_top1'] <= 100
    assert (tmp_path / summary['best_ckpt']).is_file()
    if 'teacher_model' in _loaded(name)['models']:
        assert summary['teacher_test_top1'] is not None


def _train_missing_teacher(name):
    """A teacher loaded from src_ckpt (the demo's) is first trained by the shipped recipe that writes it."""
    teacher = _loaded(name)['models'].get('teacher_model') or {}
    src = teacher.get('src_ckpt')
    if not src or Path(src).is_file():
        return
    producers = [n for n in NOT_CIFAR if (_loaded(n)['models'].get('model') or {}).get('dst_ckpt') == src]
    assert producers, f'{name}: no shipped recipe writes its teacher checkpoint {src}'
    run_train(RunDescription(recipe=producers[0], overrides=_fast(producers[0]), device='cpu', seed=0, quiet=True))


def _fast(name: str) -> list[str]:
    """FAST, with the demo's in-memory digits (a thousand images) in batches of 128 rather than 4."""
    if not name.startswith('demo/'):
        return FAST
    return [o.replace('batch_size=4', 'batch_size=128') for o in FAST]


@pytest.mark.parametrize('name', ['ilsvrc2012/wttm/mobilenet_v1_from_resnet50.yaml',
                                  'ilsvrc2012/ttm/resnet18_from_resnet34.yaml'])
def test_recipes_run_unmodified_in_torchdistills_own_pipeline(name, imagenet_env, torch_home):
    """torchdistill's loader + its model builders + DistillationBox, with the real teacher-weights path."""
    config = _loaded(name)
    device = torch.device('cpu')
    teacher, student = torchdistill_runner_models(config, device)
    weights = os.path.basename(config['models']['teacher_model']['kwargs']['weights'].url)
    saved = torch.load(torch_home / 'hub/checkpoints' / weights)
    torch.testing.assert_close(teacher.state_dict()['fc.weight'], saved['fc.weight'])  # weights came from TORCH_HOME
    train_config = config['train']
    train_config['train_data_loader']['kwargs'].update(batch_size=2, num_workers=0)
    box = get_distillation_box(teacher, student, config['datasets'], train_config, device, None, False, 1)
    assert not isinstance(box.student_model, DistributedDataParallel)  # torchdistill wraps on CUDA only
    box.pre_epoch_process(epoch=0)
    assert not box.teacher_model.training and box.student_model.training
    bn = next(m for m in box.teacher_model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    running_mean = bn.running_mean.clone()
    images, targets, supp = next(iter(box.train_data_loader))
    before = [p.detach().clone() for p in student.parameters()]
    loss = box.forward_process(images, targets, supp)
    box.post_forward_process(loss=loss)
    assert torch.isfinite(loss)
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters(), strict=True))
    torch.testing.assert_close(bn.running_mean, running_mean)  # the frozen teacher's BN stats do not drift
    assert all(p.grad is None for p in teacher.parameters())


def test_training_box_recipes_build(imagenet_env, cifar100_env):
    """A recipe without a teacher goes through torchdistill's TrainingBox (used by the demo's teacher)."""
    teacherless = [n for n in ALL if 'teacher_model' not in _loaded(n)['models']]
    for name in teacherless:
        config = _loaded(name)
        model_config = config['models'].get('model') or config['models']['student_model']
        model = get_model(model_config['key'], **model_config['kwargs']) if get_image_classification_model(
            model_config) is None else get_image_classification_model(model_config)
        box = get_training_box(model, config['datasets'], config['train'], torch.device('cpu'), None, False, 1)
        assert box.train_data_loader is not None


def test_the_docs_table_lists_every_imagenet_recipe_with_reported_top1():
    """The ImageNet page's table, made from the recipes' tables: one row per recipe, with the paper's top-1."""
    table = hook('paper_tables').imagenet_table()
    rows = {line.split(' | ')[0].strip('|` '): line for line in table.splitlines()[2:]}
    assert sorted(rows) == sorted(name[:-5] for name in IMAGENET + FEATURE_RIVALS)
    for name, top1 in (('wttm/resnet18_from_resnet34', '72.19'), ('wttm/mobilenet_v1_from_resnet50', '73.09'),
                       ('kd/resnet18_from_resnet34', '70.66'), ('kd/mobilenet_v1_from_resnet50', '70.50'),
                       ('dist/resnet18_from_resnet34', '72.07'), ('dkd/resnet18_from_resnet34', '71.70'),
                       ('dist/mobilenet_v1_from_resnet50', '73.24'), ('dkd/mobilenet_v1_from_resnet50', '72.05'),
                       ('crd/resnet18_from_resnet34', '71.17'), ('reviewkd/resnet18_from_resnet34', '71.61'),
                       ('itrd/resnet18_from_resnet34', '71.68'), ('crd/mobilenet_v1_from_resnet50', '71.37'),
                       ('reviewkd/mobilenet_v1_from_resnet50', '72.56'), ('wttm/resnet18_from_resnet50', '72.26'),
                       ('wttm/resnet18_from_resnet101', '72.34'), ('wttm/resnet18_from_resnet152', '72.39'),
                       ('ttm/resnet18_from_resnet34', '—'), ('ttm/mobilenet_v1_from_resnet50', '—')):
        assert f' | {top1} | ' in rows[f'ilsvrc2012/{name}'], name


def test_mobilenet_v1_size_shape_and_cost():
    from ttm_torchdistill import mobilenet_v1

    model = mobilenet_v1(num_classes=1000)
    assert sum(p.numel() for p in model.parameters()) == 4_231_976
    macs = []

    def count(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            macs.append(output.numel() * k * module.in_channels // module.groups)
        elif isinstance(module, torch.nn.Linear):
            macs.append(module.in_features * module.out_features)

    handles = [m.register_forward_hook(count) for m in model.modules()]
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    for handle in handles:
        handle.remove()
    assert sum(macs) == pytest.approx(569e6, rel=0.005)  # multiply-adds for one 224x224 image
    out = model(torch.randn(2, 3, 224, 224))
    assert out.shape == (2, 1000)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert get_model('mobilenet_v1', num_classes=10)(torch.randn(1, 3, 224, 224)).shape == (1, 10)
    with pytest.raises(ValueError, match='no pretrained weights'):
        get_model('mobilenet_v1', weights='IMAGENET1K_V1')
