"""`new-recipe` from every shipped base recipe: what it writes passes `train --check` on generated data (feature sizes,
teacher files, timm kwargs and the loss set for the new pair), or it refuses in one line saying why.

Each base gets one student, taken in turn from a pool of students of other families and feature sizes, and a new
method, taken in turn (TTM/WTTM hold the cross entropy, DIST/DKD add a term of their own), so every method family
meets every student of its pool. Of a CIFAR-100 family, whose bases differ only in the pair, six bases are taken
(one per student of the pool); every ImageNet and DeiT base is."""
import pytest
from conftest import FAST, cli, one_error_line

from ttm_torchdistill.recipe import list_recipes

FEATURE_FAMILIES = ('fitnet', 'at', 'vid', 'rkd', 'pkt')
"""their recipes differ only in the pair's hooks: two bases each (four of every other CIFAR-100 family)"""


def _bases() -> list[str]:
    every = [name for name in list_recipes() if '/ce/' not in name and not name.startswith('demo/')]
    families = sorted({name.split('/')[1] for name in every if name.startswith('cifar100/')})
    cifar = [name for family in families for name in [n for n in every if n.split('/')[:2] == ['cifar100', family]][
        :2 if family in FEATURE_FAMILIES else 4]]
    return cifar + [name for name in every if not name.startswith('cifar100/')]


BASES = _bases()
CIFAR_STUDENTS = ('resnet20', 'shufflenetv2_cifar', 'wrn_16_2', 'resnet18', 'vgg8_cifar', 'mobilenetv2_cifar')
"""feature sizes 64, 1024, 128, 512 (torchvision's ResNet-18 on CIFAR), 512, 1280"""
CIFAR_TEACHERS = ('resnet56', 'wrn_40_2', 'resnet32x4')
IMAGENET_STUDENTS = ('resnet18', 'mobilenet_v1', 'efficientnet_b0', 'timm/resnet18', 'test_vit')
CASES = [(base, (CIFAR_STUDENTS if base.startswith('cifar100/') else IMAGENET_STUDENTS)[i % 6 if base.startswith(
    'cifar100/') else i % 5], i) for i, base in enumerate(BASES)]
CRD_SAMPLES = ['--set', 'train.criterion.kwargs.sub_terms.crd.criterion.kwargs.num_samples=8']
"""CRD's memory bank for the generated data's 8 images (its 50,000 take a second to set up)"""


NEW_METHODS = ('wttm', 'dist', 'dkd', 'ttm')


def _method(base: str, index: int) -> str:
    """A method other than the base's, in turn (KD bases get TTM, whose beta is given); not DKD for the DeiT bases,
    whose Mixup/CutMix targets it refuses (tests/test_new_recipe.py checks that refusal)."""
    methods = [m for m in NEW_METHODS if m != base.split('/')[1] and not (m == 'dkd' and 'deit' in base)]
    return methods[index % len(methods)]


@pytest.fixture
def data(monkeypatch, tmp_path, cifar100_env, image_root, torch_home):
    monkeypatch.setenv('ILSVRC2012_ROOT', str(image_root))
    monkeypatch.setenv('TORCH_HOME', str(torch_home))
    return tmp_path


@pytest.mark.parametrize('base, student, index', CASES, ids=[f'{b}-{s}' for b, s, _ in CASES])
def test_new_recipe_from_every_base_passes_train_check(base, student, index, data, teacher_ckpts, deit_teacher):
    if base.startswith('cifar100/'):
        key = CIFAR_TEACHERS[index % len(CIFAR_TEACHERS)]
        teacher, extra = f'{key}:{teacher_ckpts(key)}', []
    elif 'deit' in base:
        pytest.importorskip('timm')
        teacher = 'deit3_small_patch16_224.fb_in22k_ft_in1k'  # timm's weights by name; offline, a file at check time
        extra = ['--set', 'datasets.ilsvrc2012/train.init.kwargs.transform.init.kwargs.input_size=32',
                 '--set', 'train.scheduler.kwargs.warmup_epochs=0',
                 '--set', f'models.teacher_model.kwargs.checkpoint={deit_teacher}']
    else:
        teacher, extra = 'resnet50', []
    if student.startswith('timm/') or student == 'test_vit':
        pytest.importorskip('timm')
    method = _method(base, index)
    result = cli(['new-recipe', '--from', base, '--teacher', teacher, '--student', student, '--method', method,
                  '--beta', '2', '-o', 'new.yaml'], data)
    if result.returncode != 0:
        one_error_line(result, 2, 'does not have')  # only a model without the feature module is refused
        assert not (data / 'new.yaml').exists()
        return
    sets = [arg for override in FAST for arg in ('--set', override)] + (CRD_SAMPLES if 'crd' in base else [])
    check = cli(['train', 'new.yaml', '--device', 'cpu', '--check', *sets, *extra], data)
    assert check.returncode == 0, (result.stdout, check.stdout[-2000:], check.stderr[-3000:])
    assert 'check passed' in check.stdout
