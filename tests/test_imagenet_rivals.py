"""The feature-based ImageNet rivals of Table 5 (CRD, ReviewKD, ITRD): their recipes keep the pair's WTTM set-up and
use the method's own weights; each trains, validates and tests through the runner (32 px inputs); ReviewKD's runs
unmodified at 224 px in torchdistill's own flow; new-recipe fits knowledge review to a new pair; the recipe rules
and the pre-flight refuse their likely mistakes in one line."""
import json
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import FAST, RECIPES, cli, one_error_line, torchdistill_runner_models
from torchdistill.common.yaml_util import load_yaml_file
from torchdistill.core.distillation import get_distillation_box
from torchdistill.models.registry import get_model

from ttm_torchdistill.description import RunDescription
from ttm_torchdistill.methods import method_by_loss, short_names
from ttm_torchdistill.recipe import list_recipes
from ttm_torchdistill.runner import run_train

RIVALS = sorted(f'{n}.yaml' for n in list_recipes() if n.split('/')[:2] in (['ilsvrc2012', 'crd'],
                                                                             ['ilsvrc2012', 'reviewkd'],
                                                                             ['ilsvrc2012', 'itrd']))
TOP1 = {('crd', 'resnet18_from_resnet34'): 71.17, ('crd', 'mobilenet_v1_from_resnet50'): 71.37,
        ('reviewkd', 'resnet18_from_resnet34'): 71.61, ('reviewkd', 'mobilenet_v1_from_resnet50'): 72.56,
        ('itrd', 'resnet18_from_resnet34'): 71.68}
"""Table 5's top-1 of each rival (the paper has no ITRD number for ResNet-50 -> MobileNet)"""
POOLED = {'resnet18': 512, 'resnet34': 512, 'resnet50': 2048, 'mobilenet_v1': 1024}
LEVELS = {'resnet18': [64, 128, 256, 512, 512], 'resnet34': [64, 128, 256, 512, 512],
          'resnet50': [256, 512, 1024, 2048, 2048], 'mobilenet_v1': [128, 256, 512, 1024, 1024]}
"""channels of the stage outputs and the pooled feature (knowledge review's levels, shallowest first)"""
REVIEW_WEIGHT = {'resnet18_from_resnet34': 1.0, 'mobilenet_v1_from_resnet50': 8.0}
SUB_TERMS = 'train.criterion.kwargs.sub_terms'
SMALL = 32  # the runner tests' input size
SMALL_SETS = [*FAST, 'train.train_data_loader.kwargs.batch_size=8',  # one iteration on the 8 generated images
              f'datasets.ilsvrc2012/train.init.kwargs.transform.init.kwargs.transforms.0.init.kwargs.size='
              f'[{SMALL}, {SMALL}]']
REVIEW_SIZES = 'train.student.auxiliary_model_wrapper.kwargs.sizes'
SMALL_REVIEW = f'{REVIEW_SIZES}=[1, 1, 2, 4, 8]'
"""knowledge review's level sizes at 32 px (stage outputs 8, 4, 2, 1 and the pooled 1), deepest first"""


@pytest.fixture(scope='module')
def shifted_torch_home(tmp_path_factory) -> Path:
    """A TORCH_HOME whose ResNet-34 (ITRD's teacher) has batch-norm shifts 0.5 and statistics estimated on random
    images, as a trained network's pooled features are not 0 for a whole batch (a fresh one's are, and ITRD's
    standardisation is then 0/0, as in its reference code)."""
    home = tmp_path_factory.mktemp('torch_home_shifted')
    (home / 'hub/checkpoints').mkdir(parents=True)
    torch.manual_seed(0)
    model = torchvision.models.resnet34()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for norm in norms:
        norm.bias.data.fill_(0.5)
        norm.momentum = None  # a cumulative average over the estimation batch
        norm.reset_running_stats()
    with torch.no_grad():
        model.train()(torch.randn(16, 3, SMALL, SMALL))
    url = torchvision.models.ResNet34_Weights.IMAGENET1K_V1.url
    torch.save(model.state_dict(), home / 'hub/checkpoints' / url.rsplit('/', 1)[-1])
    return home


def _parts(name: str) -> tuple[str, str, str, str]:
    """(method, pair, student, teacher) of a recipe name."""
    method, pair = name.split('/')[1], name.split('/')[2][:-5]
    student, teacher = pair.split('_from_')
    return method, pair, student, teacher


def test_the_rivals_of_table_5_have_their_recipes_and_methods():
    assert RIVALS == sorted(f'ilsvrc2012/{m}/{p}.yaml' for m, p in TOP1)
    assert [(method_by_loss(k).name, method_by_loss(k).logit) for k in ('CRDLoss', 'HierarchicalContextLoss')] == \
        [('crd', False), ('reviewkd', False)]
    names = short_names()  # CRD's `temperature` is TTM's, KD's and DKD's too: its NCE temperature has its own name
    assert {n for n, keys in names.items() if 'CRDLoss' in keys} == {'mu', 'nce_temperature', 'nce_momentum'}
    assert 'CRDLoss' not in names['temperature']
    assert not [n for n, keys in names.items() if 'HierarchicalContextLoss' in keys]  # five terms, five weights


def _without(section: dict, *keys: str) -> dict:
    return {k: v for k, v in section.items() if k not in keys}


@pytest.mark.parametrize('name', RIVALS)
def test_rival_recipe_keeps_the_wttm_set_up_with_the_methods_own_weights(name, imagenet):
    method, pair, student, teacher = _parts(name)
    config, wttm = load_yaml_file(str(RECIPES / name)), load_yaml_file(str(RECIPES / f'ilsvrc2012/wttm/{pair}.yaml'))
    text = (RECIPES / name).read_text()
    assert config['paper'] == {'top1': TOP1[method, pair], 'source': 'Zheng & Yang, ICLR 2024, Table 5'}
    assert 'a number it copies from' in text and "keeps the WTTM recipe's set-up" in text
    assert config['dependencies'] == wttm['dependencies']
    for split, dataset in config['datasets'].items():  # the same files and transforms
        theirs = wttm['datasets'][split]
        assert (type(dataset), dataset.root, repr(dataset.transform)) == (type(theirs), theirs.root,
                                                                         repr(theirs.transform))
    assert config['models']['teacher_model'] == wttm['models']['teacher_model']
    ours, theirs = config['models']['student_model'], wttm['models']['student_model']
    assert _without(ours, 'dst_ckpt') == _without(theirs, 'dst_ckpt')
    assert ours['dst_ckpt'] == f'./resource/ckpt/ilsvrc2012/{method}/ilsvrc2012-{pair}.pt'
    train, base = config['train'], wttm['train']
    for key in ('log_freq', 'num_epochs', 'pre_epoch_process', 'val_data_loader', 'optimizer', 'scheduler'):
        assert train[key] == base[key], key
    assert _without(train['train_data_loader'], 'dataset_wrapper') == base['train_data_loader']
    assert config['test'] == wttm['test'] and train['criterion']['key'] == base['criterion']['key']
    terms = train['criterion']['kwargs']['sub_terms']
    assert terms['ce']['criterion'] == {'key': 'CrossEntropyLoss', 'kwargs': {'reduction': 'mean'}}
    assert terms['ce']['weight'] == 1.0
    student_role, teacher_role = train['student'], train['teacher']
    if method == 'crd':  # CRD's own setting, the memory bank of all ImageNet training images
        assert list(terms) == ['ce', 'crd'] and terms['crd']['weight'] == 0.8
        crd = terms['crd']['criterion']['kwargs']
        assert (crd['temperature'], crd['momentum'], crd['input_size']) == (0.07, 0.5, 128)
        assert crd['output_size'] == crd['num_samples'] == 1_281_167
        wrapper = train['train_data_loader']['dataset_wrapper']
        assert wrapper == {'key': 'CRDDatasetWrapper', 'kwargs': {'num_negative_samples': 16384, 'mode': 'exact',
                                                                 'ratio': 1.0}}
        assert crd['num_negative_samples'] == 16384
        for role, key in ((student_role, student), (teacher_role, teacher)):
            aux = role['auxiliary_model_wrapper']
            assert aux['key'] == 'Linear4CRD' and aux['kwargs']['input_module_path'] == 'model.avgpool'
            assert aux['kwargs']['linear_kwargs'] == {'in_features': POOLED[key], 'out_features': 128, 'bias': True}
        assert teacher_role['frozen_modules'] == ['model'] and student_role['wrapper'] is None
        return
    assert 'dataset_wrapper' not in train['train_data_loader']
    assert teacher_role['requires_grad'] is False and 'wrapper' not in teacher_role and student_role['wrapper'] is None
    if method == 'itrd':  # ITRD's same-architecture values
        assert list(terms) == ['ce', 'itrd'] and terms['itrd']['weight'] == 1.0
        kwargs = terms['itrd']['criterion']['kwargs']
        assert (kwargs['beta_corr'], kwargs['beta_mi'], kwargs['alpha_it']) == (2.0, 1.0, 1.01)
        assert (kwargs['student_feature_size'], kwargs['teacher_feature_size']) == (POOLED[student], POOLED[teacher])
        assert student_role['auxiliary_model_wrapper']['kwargs'] == {
            'input_module_path': 'model.avgpool', 'in_features': POOLED[student], 'out_features': POOLED[teacher]}
        return
    # ReviewKD: one HierarchicalContextLoss per level, the fusion module of the same level against the teacher's
    hcl = [n for n in terms if n != 'ce']
    assert len(hcl) == 5 and all(terms[n]['weight'] == REVIEW_WEIGHT[pair] for n in hcl)
    aux = student_role['auxiliary_model_wrapper']
    assert aux['key'] == 'Student4KnowledgeReview' and aux['kwargs']['sizes'] == [1, 7, 14, 28, 56]
    abfs = aux['kwargs']['abfs']
    mid = 512 if student == 'resnet18' else 256
    assert [(a['kwargs']['in_channels'], a['kwargs']['mid_channels'], a['kwargs']['out_channels']) for a in abfs] == \
        [(s, mid, t) for s, t in zip(LEVELS[student], LEVELS[teacher], strict=True)]
    for level, term in enumerate(hcl):
        kwargs = terms[term]['criterion']['kwargs']
        assert terms[term]['criterion']['key'] == 'HierarchicalContextLoss' and kwargs['output_sizes'] == [4, 2, 1]
        assert kwargs['student_module_path'] == f'abf_modules.{4 - level}'
        assert kwargs['teacher_module_path'] == teacher_role['forward_hook']['output'][level]
    assert '[1, 7, 14, 28, 56] at this recipe\'s 224 px' in text


@pytest.mark.parametrize('key', list(LEVELS))
def test_the_levels_and_pooled_sizes_the_recipes_name_are_the_models(key, imagenet):
    """At 224 px, the modules the recipes hook give knowledge review's channels and sizes [56, 28, 14, 7, 1], and
    the pooled feature CRD and ITRD embed."""
    names = {n: _parts(n) for n in RIVALS}
    recipe = next(n for n, (m, _, s, t) in names.items() if m == 'reviewkd' and key in (s, t))
    config = load_yaml_file(str(RECIPES / recipe))
    train = config['train']
    if key == _parts(recipe)[2]:
        paths = [a['path'].removeprefix('student_model.') for a in train['student']['auxiliary_model_wrapper']
                 ['kwargs']['abfs']]
    else:
        paths = train['teacher']['forward_hook']['output']
    model = get_model(key, num_classes=1000) if key == 'mobilenet_v1' else getattr(torchvision.models, key)()
    shapes = {}
    for path in paths:
        model.get_submodule(path).register_forward_hook(lambda m, a, out, p=path: shapes.update({p: out.shape}))
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 224, 224))
    assert [shapes[p][1] for p in paths] == LEVELS[key] and shapes[paths[-1]][1] == POOLED[key]
    assert [shapes[p][2] for p in paths] == [56, 28, 14, 7, 1]


def _small_sets(name: str) -> list[str]:
    """32 px inputs, one iteration; CRD's memory banks for the generated data's 8 images, knowledge review's level
    sizes for 32 px."""
    method = _parts(name)[0]
    extra = {'crd': [f'{SUB_TERMS}.crd.criterion.kwargs.num_samples=8'],
             'reviewkd': [SMALL_REVIEW]}.get(method, [])
    return [*SMALL_SETS, *extra]


@pytest.mark.parametrize('name', RIVALS)
def test_every_rival_trains_validates_and_tests_through_the_runner(name, imagenet, monkeypatch, shifted_torch_home):
    if name.startswith('ilsvrc2012/itrd/'):
        monkeypatch.setenv('TORCH_HOME', str(shifted_torch_home))
    summary = run_train(RunDescription(recipe=name, overrides=_small_sets(name), device='cpu', seed=0, quiet=True,
                                       summary='summary.json'))
    assert summary['epochs_run'] == 1 and 0 <= summary['student_test_top1'] <= 100
    assert summary['teacher_test_top1'] is not None and summary['paper_top1'] == TOP1[_parts(name)[:2]]
    (record,) = [json.loads(line) for line in Path(summary['metrics']).read_text().splitlines()]
    terms = load_yaml_file(str(RECIPES / name))['train']['criterion']['kwargs']['sub_terms']
    assert all(isinstance(record[f'loss.{t}'], float) and record[f'loss.{t}'] >= 0 for t in terms if t != 'itrd')
    assert (imagenet / summary['best_ckpt']).is_file()


def test_reviewkd_runs_unmodified_at_224_px_in_torchdistills_own_flow(imagenet):
    """torchdistill's loader, model builders and DistillationBox on the shipped recipe as it is (224 px, its level
    sizes): one step trains the student and the fusion modules, not the teacher."""
    config = load_yaml_file(str(RECIPES / 'ilsvrc2012/reviewkd/resnet18_from_resnet34.yaml'))
    config['train']['train_data_loader']['kwargs'].update(batch_size=2, num_workers=0)
    device = torch.device('cpu')
    teacher, student = torchdistill_runner_models(config, device)
    box = get_distillation_box(teacher, student, config['datasets'], config['train'], device, None, False, 1)
    fusion = box.student_model.abf_modules
    before = [p.detach().clone() for p in (*student.parameters(), *fusion.parameters())]
    box.pre_epoch_process(epoch=0)
    images, targets, supp = next(iter(box.train_data_loader))
    assert images.shape[-2:] == (224, 224)
    loss = box.forward_process(images, targets, supp)
    box.post_forward_process(loss=loss)
    assert torch.isfinite(loss) and loss > 0
    after = [*student.parameters(), *fusion.parameters()]
    changed = [not torch.equal(a, b) for a, b in zip(before, after, strict=True)]
    assert any(changed[:len(list(student.parameters()))]) and any(changed[len(list(student.parameters())):])
    assert all(p.grad is None for p in teacher.parameters())


def test_new_recipe_fits_knowledge_review_to_a_new_teacher(imagenet):
    result = cli(['new-recipe', '--from', 'ilsvrc2012/reviewkd/resnet18_from_resnet34', '--teacher', 'resnet50',
                  '--student', 'resnet18', '--method', 'wttm', '--beta', '1.6', '-o', 'new.yaml'], imagenet)
    assert result.returncode == 0, result.stderr
    config = load_yaml_file(str(imagenet / 'new.yaml'))
    abfs = config['train']['student']['auxiliary_model_wrapper']['kwargs']['abfs']
    assert [a['kwargs']['out_channels'] for a in abfs] == LEVELS['resnet50']
    assert [a['kwargs']['in_channels'] for a in abfs] == LEVELS['resnet18']
    assert "fusion channels (student -> teacher level) 64 -> 256" in (imagenet / 'new.yaml').read_text()
    sets = [a for o in [*SMALL_SETS, SMALL_REVIEW] for a in ('--set', o)]
    check = cli(['train', 'new.yaml', '--device', 'cpu', '--check', *sets], imagenet)
    assert check.returncode == 0 and 'check passed' in check.stdout, check.stderr[-2000:]
    refused = cli(['new-recipe', '--from', 'ilsvrc2012/reviewkd/resnet18_from_resnet34', '--teacher', 'resnet50',
                   '--student', 'mobilenet_v1', '--method', 'wttm', '--beta', '1.6', '-o', 'other.yaml'], imagenet)
    one_error_line(refused, 2, "--student mobilenet_v1", "module 'layer1'", 'which mobilenet_v1 does not have')
    assert not (imagenet / 'other.yaml').exists()


@pytest.mark.parametrize('override, fragments', [
    (f'{REVIEW_SIZES}=[0, 7]', ['kwargs.sizes=[0, 7]', 'a non-empty list of integers >= 1']),
    ('train.student.auxiliary_model_wrapper.kwargs.abfs.1.io=out', ["abfs.1.io='out'", "one of 'input', 'output'"]),
    ('train.student.auxiliary_model_wrapper.kwargs.abfs.4.kwargs.mid_channels=0',
     ['abfs.4.kwargs.mid_channels=0', 'an integer >= 1']),
    (f'{SUB_TERMS}.reviewkd_layer1.criterion.kwargs.output_sizes=4', ['output_sizes=4', 'a list of integers']),
])
def test_a_wrong_knowledge_review_value_is_one_line_before_any_work(override, fragments, imagenet):
    result = cli(['train', 'ilsvrc2012/reviewkd/resnet18_from_resnet34', '--device', 'cpu', '--set', override],
                 imagenet)
    one_error_line(result, 2, 'reviewkd/resnet18_from_resnet34.yaml', *fragments)
    assert list(imagenet.iterdir()) == []


@pytest.mark.parametrize('override, fragments', [
    (f'{SUB_TERMS}.crd.criterion.kwargs.temperature=0', ['crd.criterion.kwargs.temperature=0', 'a number > 0']),
    (f'{SUB_TERMS}.crd.criterion.kwargs.num_samples=7',  # the generated data has 8 training images
     ['sub_terms.crd.criterion (CRDLoss): its memory banks hold 7 samples', 'the training data has 8',
      'output_size and num_samples to 8']),
])
def test_a_wrong_crd_value_is_one_line_before_any_work(override, fragments, imagenet):
    sets = [a for o in [*SMALL_SETS, override] for a in ('--set', o)]
    result = cli(['train', 'ilsvrc2012/crd/resnet18_from_resnet34', '--device', 'cpu', *sets], imagenet)
    one_error_line(result, 2, *fragments)
    assert not (imagenet / 'resource').exists()
