"""`ttm-distill new-recipe`: recipes for new pairs that keep the base's tags, anchors and schedule."""
import pytest
import torchvision
from conftest import FAST, cli, one_error_line

from ttm_torchdistill.description import RunDescription
from ttm_torchdistill.errors import UsageError
from ttm_torchdistill.recipe import load_recipe, resolve_recipe
from ttm_torchdistill.runner import run_train
from ttm_torchdistill.tools.new_recipe import new_recipe

BASE = 'ilsvrc2012/wttm/resnet18_from_resnet34'


@pytest.mark.parametrize('teacher, student, method, beta, loss', [
    ('resnet50:IMAGENET1K_V1', 'resnet18', 'wttm', None, 'WTTMLoss'),
    ('resnet34:IMAGENET1K_V1', 'efficientnet_b0', 'ttm', 2.0, 'TTMLoss'),
])
def test_new_pairs_run_one_epoch_through_the_runner(imagenet, teacher, student, method, beta, loss):
    path = new_recipe(BASE, teacher, student, method, beta=beta, output='new/recipe.yaml')
    text = path.read_text()
    assert text.startswith(f'# {method.upper()}: {student} from {teacher.split(":")[0]}')
    assert f'from {BASE}' in text
    for kept in ('&imagenet_train', '!import_call', '*normalize_kwargs', '&student_experiment', "'MultiStepLR'"):
        assert kept in text, kept
    config = load_recipe(path)
    teacher_key, weights = teacher.split(':')
    models = config['models']
    assert models['teacher_model']['key'] == teacher_key and models['student_model']['key'] == student
    assert models['teacher_model']['kwargs']['weights'] == torchvision.models.get_weight(
        f'{type(models["teacher_model"]["kwargs"]["weights"]).__name__}.{weights}')
    assert type(models['teacher_model']['kwargs']['weights']).__name__.lower().startswith(teacher_key)
    assert models['student_model']['dst_ckpt'] == \
        f'./resource/ckpt/ilsvrc2012/{method}/ilsvrc2012-{student}_from_{teacher_key}.pt'
    base = load_recipe(resolve_recipe(BASE))
    for key in ('optimizer', 'scheduler', 'num_epochs'):
        assert config['train'][key] == base['train'][key]
    (term,) = config['train']['criterion']['kwargs']['sub_terms'].values()
    assert term['criterion']['key'] == loss
    assert term['criterion']['kwargs']['gamma'] == 0.8
    assert term['criterion']['kwargs']['beta'] == (beta or 1.6)
    summary = run_train(RunDescription(recipe=str(path), overrides=FAST, device='cpu', seed=0))
    assert summary['epochs_run'] == 1 and summary['student_test_top1'] is not None


def test_kd_from_a_wttm_base_uses_temperature(imagenet):
    path = new_recipe(BASE, 'resnet34:IMAGENET1K_V1', 'resnet18', 'kd', gamma=0.5, output='kd.yaml')
    (term,) = load_recipe(path)['train']['criterion']['kwargs']['sub_terms'].values()
    assert term['criterion']['key'] == 'KDLoss' and term['criterion']['kwargs']['temperature'] == 2.0


@pytest.mark.parametrize('args, fragment', [
    (dict(teacher='resnet51', student='resnet18'), "--teacher 'resnet51'"),
    (dict(teacher='resnet50', student='nonet'), "--student 'nonet'"),
    (dict(teacher='resnet50:IMAGENET1K_V9', student='resnet18'), "'IMAGENET1K_V9' are not weights of resnet50"),
    (dict(teacher='resnet50:ResNet34_Weights', student='resnet18'), 'are not weights of resnet50'),
    (dict(teacher='mobilenet_v1', student='resnet18'), 'KEY:CHECKPOINT_FILE'),
])
def test_refusals(imagenet, args, fragment):
    with pytest.raises(UsageError, match=fragment.replace('(', r'\(').replace('[', r'\[')):
        new_recipe(BASE, method='wttm', output='x.yaml', **args)
    assert not (imagenet / 'x.yaml').exists()


def test_existing_output_needs_force_on_the_command_line(imagenet):
    args = ['new-recipe', '--from', BASE, '--teacher', 'resnet50', '--student', 'resnet18', '--method', 'wttm',
            '-o', 'same.yaml']
    assert cli(args, imagenet).returncode == 0
    (imagenet / 'same.yaml').write_text('# mine\n')
    refused = cli(args, imagenet)
    assert refused.returncode == 2 and 'same.yaml exists' in refused.stderr and 'Traceback' not in refused.stderr
    assert (imagenet / 'same.yaml').read_text() == '# mine\n'
    assert cli(args + ['--force'], imagenet).returncode == 0
    text = (imagenet / 'same.yaml').read_text()
    assert 'ResNet50_Weights.DEFAULT' in text.splitlines()[0] and "[*teacher_weights, 'DEFAULT']" in text


# --- timm models --------------------------------------------------------------------------------------------------

DEIT_BASE = 'ilsvrc2012/wttm/deit_tiny_from_deit3_small'


def test_timm_teacher_and_student_from_a_resnet_base_run_one_epoch(imagenet):
    timm = pytest.importorskip('timm')
    import torch

    torch.manual_seed(0)
    torch.save(timm.create_model('test_resnet', num_classes=1000).state_dict(), imagenet / 'teacher.pth')
    path = new_recipe(BASE, f'test_resnet:{imagenet / "teacher.pth"}', 'test_convnext', 'kd', output='timm.yaml')
    text = path.read_text()
    assert text.startswith(f'# KD: test_convnext from test_resnet ({imagenet / "teacher.pth"})')
    assert '_weights' not in text and 'ResNet34_Weights' not in text  # the torchvision weights class is gone
    models = load_recipe(path)['models']
    assert models['teacher_model']['key'] == models['student_model']['key'] == 'timm_model'
    assert models['teacher_model']['kwargs'] == {'name': 'test_resnet', 'pretrained': False,
                                                 'checkpoint': str(imagenet / 'teacher.pth'), 'num_classes': 1000}
    assert models['student_model']['kwargs'] == {'name': 'test_convnext', 'pretrained': False, 'num_classes': 1000}
    assert models['student_model']['dst_ckpt'] == \
        './resource/ckpt/ilsvrc2012/kd/ilsvrc2012-test_convnext_from_test_resnet.pt'  # the pair's names
    summary = run_train(RunDescription(recipe=str(path), overrides=FAST, device='cpu', seed=0))
    assert summary['epochs_run'] == 1 and summary['teacher_test_top1'] is not None


def test_pairs_from_the_deit_base(imagenet):
    pytest.importorskip('timm')
    # a torchvision teacher and another timm student: the DeiT schedule, data and mixing stay
    path = new_recipe(DEIT_BASE, 'resnet50:IMAGENET1K_V1', 'test_vit', 'wttm', output='tv.yaml')
    text = path.read_text()
    assert "'adamw_no_decay_norm_bias_tokens'" in text and 'mixup_cutmix_collate' in text
    models = load_recipe(path)['models']
    assert models['teacher_model']['key'] == 'resnet50'
    assert models['teacher_model']['kwargs'] == {'weights': 'ResNet50_Weights.IMAGENET1K_V1', 'num_classes': 1000}
    assert models['student_model']['kwargs'] == {'name': 'test_vit', 'pretrained': False, 'num_classes': 1000,
                                                 'drop_path_rate': 0.0, 'img_size': 224}
    assert models['student_model']['dst_ckpt'] == './resource/ckpt/ilsvrc2012/wttm/ilsvrc2012-test_vit_from_resnet50.pt'
    small = ['datasets.ilsvrc2012/train.init.kwargs.transform.init.kwargs.input_size=32',
             'train.scheduler.kwargs.warmup_epochs=0', *FAST]
    summary = run_train(RunDescription(recipe=str(path), overrides=small, device='cpu', seed=0))
    assert summary['epochs_run'] == 1 and summary['teacher_test_top1'] is not None
    # a timm teacher by name: timm's pretrained weights at run time (nothing is downloaded to write the recipe)
    path = new_recipe(DEIT_BASE, 'timm/test_vit2', 'test_vit', 'kd', output='timm.yaml')
    models = load_recipe(path)['models']
    assert models['teacher_model']['kwargs'] == {'name': 'test_vit2', 'pretrained': True, 'checkpoint': None,
                                                 'num_classes': 1000, 'img_size': 224}
    assert path.read_text().startswith("# KD: test_vit from test_vit2 (timm's pretrained weights)")
    assert models['student_model']['dst_ckpt'] == './resource/ckpt/ilsvrc2012/kd/ilsvrc2012-test_vit_from_test_vit2.pt'


@pytest.mark.parametrize('args, fragment', [
    (dict(teacher='deit_tiny_patch16_999', student='test_vit'), "--teacher 'deit_tiny_patch16_999': neither a "
                                                                 'torchvision classification model nor in '
                                                                 "torchdistill's model registry, nor a timm model"),
    (dict(teacher='timm/resnet51', student='test_vit'), "--teacher timm/resnet51: 'resnet51' is not a timm model"),
    (dict(teacher='test_vit2:missing.pth', student='test_vit'), "'missing.pth' is not a file"),
    (dict(teacher='test_vit2', student='test_vit3:x'), "--student 'test_vit3:x'"),
])
def test_timm_refusals(imagenet, args, fragment):
    pytest.importorskip('timm')
    with pytest.raises(UsageError, match=fragment.replace('(', r'\(').replace('[', r'\[')):
        new_recipe(DEIT_BASE, method='wttm', output='x.yaml', **args)
    assert not (imagenet / 'x.yaml').exists()


# -- each method's parameters by what they mean for it ---------------------------------------------------------------

@pytest.mark.parametrize('method, flag, value, fragment', [
    ('dist', '--gamma', '-1', '--gamma -1: expected a finite number >= 0 (dist: the intra-class weight)'),
    ('kd', '--gamma', '0', '--gamma 0: expected a finite number > 0 (kd: gamma = 1/temperature)'),
    ('dkd', '--gamma', '0', '--gamma 0: expected a finite number > 0 (dkd: gamma = 1/temperature)'),
    ('ttm', '--gamma', '0', '(ttm: gamma = 1/temperature) (the paper uses 0 < gamma <= 1)'),
    ('dkd', '--beta', '-2', '--beta -2: expected a finite number >= 0 (dkd: the NCKD weight)'),
])
def test_parameters_are_checked_by_what_they_mean_for_the_method(imagenet, method, flag, value, fragment):
    args = ['new-recipe', '--from', BASE, '--teacher', 'resnet50', '--student', 'resnet18', '--method', method,
            '--beta', '1', flag, value, '-o', 'x.yaml']
    one_error_line(cli(args, imagenet), 2, fragment)
    assert not (imagenet / 'x.yaml').exists()


def test_dist_gamma_zero_is_a_weight_of_zero_and_trains(imagenet):
    """DIST's gamma weighs its intra-class term: 0 leaves the inter-class term alone (docs: beta, gamma >= 0)."""
    result = cli(['new-recipe', '--from', BASE, '--teacher', 'resnet50', '--student', 'resnet18', '--method', 'dist',
                  '--gamma', '0', '-o', 'dist.yaml'], imagenet)
    assert result.returncode == 0, result.stderr
    terms = load_recipe(imagenet / 'dist.yaml')['train']['criterion']['kwargs']['sub_terms']
    assert terms['dist']['criterion']['kwargs']['gamma'] == 0.0
    summary = run_train(RunDescription(recipe=str(imagenet / 'dist.yaml'), overrides=FAST, device='cpu', seed=0))
    assert summary['epochs_run'] == 1


def test_kd_takes_beta_and_keeps_a_kd_base_s_weights(imagenet, cifar100_env, teacher_ckpts):
    path = new_recipe(BASE, 'resnet50', 'resnet18', 'kd', gamma=0.25, beta=0.7, output='kd.yaml')
    (term,) = load_recipe(path)['train']['criterion']['kwargs']['sub_terms'].values()
    assert term['criterion']['kwargs'] == {**term['criterion']['kwargs'], 'temperature': 4.0, 'alpha': 0.5,
                                           'beta': 0.7}
    assert 'KDLoss with temperature 4, alpha 0.5, beta 0.7' in path.read_text()
    # from a KD base: its alpha and beta (the CRD benchmark's 0.1 CE + 0.9 KL), as gamma carries its temperature
    kd_base = 'cifar100/kd/resnet20_from_resnet56'
    base = load_recipe(resolve_recipe(kd_base))['train']['criterion']['kwargs']['sub_terms']
    (base_term,) = [t['criterion']['kwargs'] for t in base.values() if t['criterion']['key'] == 'KDLoss']
    path = new_recipe(kd_base, f'resnet56:{teacher_ckpts("resnet56")}', 'resnet32', 'kd', output='kd_cifar.yaml')
    (term,) = load_recipe(path)['train']['criterion']['kwargs']['sub_terms'].values()
    for key in ('temperature', 'alpha', 'beta'):
        assert term['criterion']['kwargs'].get(key) == base_term.get(key), key


def test_dkd_from_a_mixup_cutmix_base_is_refused_naming_the_collate(imagenet):
    pytest.importorskip('timm')
    args = ['new-recipe', '--from', 'ilsvrc2012/wttm/deit_tiny_from_deit3_small', '--teacher',
            'deit3_small_patch16_224.fb_in22k_ft_in1k', '--student', 'deit_tiny_patch16_224', '--method', 'dkd',
            '--beta', '8', '-o', 'dkd.yaml']
    one_error_line(cli(args, imagenet), 2, 'DKDLoss needs one class index per sample',
                   "train.train_data_loader.collate_fn (mixup_cutmix(num_classes=1000", 'gives soft targets')
    assert not (imagenet / 'dkd.yaml').exists()
    # DIST and the methods that hold the cross entropy take soft targets
    args[args.index('dkd')] = 'dist'
    assert cli(args, imagenet).returncode == 0
