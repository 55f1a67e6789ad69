"""`ttm-distill new-recipe`: recipes for new pairs that keep the base's tags, anchors and schedule."""
import pytest
import torchvision
from conftest import FAST, run_cli

from ttm_torchdistill.errors import UsageError
from ttm_torchdistill.recipe import load_recipe, resolve_recipe
from ttm_torchdistill.runner import RunOptions, run_train
from ttm_torchdistill.tools.new_recipe import new_recipe

BASE = 'ilsvrc2012/wttm/resnet18_from_resnet34'


@pytest.fixture
def imagenet(monkeypatch, tmp_path, image_root, torch_home):
    monkeypatch.setenv('ILSVRC2012_ROOT', str(image_root))
    monkeypatch.setenv('TORCH_HOME', str(torch_home))
    monkeypatch.chdir(tmp_path)
    return tmp_path


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
    summary = run_train(RunOptions(recipe=str(path), overrides=FAST, device='cpu', seed=0))
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
    assert run_cli(args, imagenet).returncode == 0
    (imagenet / 'same.yaml').write_text('# mine\n')
    refused = run_cli(args, imagenet)
    assert refused.returncode == 2 and 'same.yaml exists' in refused.stderr and 'Traceback' not in refused.stderr
    assert (imagenet / 'same.yaml').read_text() == '# mine\n'
    assert run_cli(args + ['--force'], imagenet).returncode == 0
    text = (imagenet / 'same.yaml').read_text()
    assert 'ResNet50_Weights.DEFAULT' in text.splitlines()[0] and "[*teacher_weights, 'DEFAULT']" in text
