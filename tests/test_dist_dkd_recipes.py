"""The DIST and DKD recipes: every one trains an iteration, validates and tests through the runner; a sample through
torchdistill's own example-runner flow, with DKD's warm-up following the epoch; a DKD run resumed equals an
uninterrupted one; new-recipe writes them and from them, and sweep's short names reach their terms."""
import json
from pathlib import Path

import pytest
import torch
from conftest import FAST, RECIPES, cli, one_error_line, straight_and_resumed, torchdistill_runner_models
from torchdistill.common.yaml_util import load_yaml_file
from torchdistill.core.distillation import get_distillation_box

from ttm_torchdistill.cli import main
from ttm_torchdistill.description import RunDescription
from ttm_torchdistill.recipe import list_recipes
from ttm_torchdistill.runner import run_train

RIVALS = [f'{name}.yaml' for name in list_recipes() if name.split('/')[1] in ('dist', 'dkd')]
PARTS = {'dist': ['inter', 'intra', 'loss.ce', 'loss.dist'], 'dkd': ['tckd', 'nckd', 'warmup', 'loss.ce', 'loss.dkd']}
SUB_TERMS = 'train.criterion.kwargs.sub_terms'


def test_the_rivals_have_their_recipes():
    cifar = [n for n in RIVALS if n.startswith('cifar100/')]
    assert len([n for n in cifar if '/dist/' in n]) == 13 and len([n for n in cifar if '/dkd/' in n]) == 11
    assert sorted(n for n in RIVALS if n.startswith('ilsvrc2012/')) == [
        f'ilsvrc2012/{m}/{p}.yaml' for m in ('dist', 'dkd') for p in ('mobilenet_v1_from_resnet50',
                                                                        'resnet18_from_resnet34')]


def _overrides(name: str, teacher_ckpts) -> list[str]:
    if not name.startswith('cifar100/'):
        return list(FAST)
    teacher = name.split('_from_')[1][:-5]
    return [*FAST, f'models.teacher_model.src_ckpt={teacher_ckpts(teacher)}']


@pytest.mark.parametrize('name', RIVALS)
def test_every_rival_recipe_trains_validates_and_tests_through_the_runner(name, tmp_path, monkeypatch, cifar100_env,
                                                                          image_root, torch_home, teacher_ckpts):
    monkeypatch.setenv('ILSVRC2012_ROOT', str(image_root))
    monkeypatch.setenv('TORCH_HOME', str(torch_home))
    monkeypatch.chdir(tmp_path)
    summary = run_train(RunDescription(recipe=name, overrides=_overrides(name, teacher_ckpts), device='cpu', seed=0,
                                       quiet=True, summary='summary.json'))
    assert summary['epochs_run'] == 1 and 0 <= summary['student_test_top1'] <= 100
    assert summary['teacher_test_top1'] is not None
    assert summary['paper_top1'] == load_yaml_file(str(RECIPES / name))['paper']['top1']
    method = name.split('/')[1]
    (record,) = [json.loads(line) for line in Path(summary['metrics']).read_text().splitlines()]
    assert all(isinstance(record[k], float) for k in PARTS[method])
    table = cli(['table', 'summary.json', '--format', 'markdown'], tmp_path)  # the method beside the paper's number
    (row,) = [line for line in table.stdout.splitlines() if line.startswith(f'| {name[:-5]} |')]
    assert f" | {summary['paper_top1']:.2f} | " in row, table.stdout
    if method == 'dkd':  # CIFAR-100: 1/20 of the DKD term in the first epoch; ImageNet: no warm-up
        assert record['warmup'] == pytest.approx(0.05 if name.startswith('cifar100/') else 1.0)


def test_dkd_warm_up_follows_the_epoch_in_torchdistills_own_flow(cifar100_env, teacher_ckpts):
    """torchdistill's builders and box, driven as its example runner drives them (pre-epoch process, forward,
    post-forward, post-epoch): the DKD term is 1/20 of its full value in epoch 1 and 2/20 in epoch 2."""
    name = 'cifar100/dkd/resnet8x4_from_resnet32x4.yaml'
    config = load_yaml_file(str(RECIPES / name))
    config['train']['train_data_loader']['kwargs'].update(batch_size=4, num_workers=0)
    config['models']['teacher_model']['src_ckpt'] = str(teacher_ckpts('resnet32x4'))
    device = torch.device('cpu')
    teacher, student = torchdistill_runner_models(config, device)
    box = get_distillation_box(teacher, student, config['datasets'], config['train'], device, None, False, 1)
    dkd = box.criterion.term_dict['dkd'][0]
    outputs = []
    dkd.register_forward_hook(lambda module, args, output: outputs.append(output.detach()))
    images, targets, supp = next(iter(box.train_data_loader))
    for epoch in range(2):
        box.pre_epoch_process(epoch=epoch)
        loss = box.forward_process(images, targets, supp)
        box.post_forward_process(loss=loss)
        tckd, nckd, warmup = dkd.diagnostics().tolist()
        assert warmup == pytest.approx((epoch + 1) / 20) and torch.isfinite(loss)
        assert outputs[-1].item() == pytest.approx(warmup * (1.0 * tckd + 8.0 * nckd), rel=1e-6)
        box.post_epoch_process()


def test_dkd_killed_after_one_epoch_and_resumed_equals_an_uninterrupted_run(tmp_path, cifar100_env, teacher_ckpts):
    name = 'cifar100/dkd/resnet20_from_resnet56'
    common = [*FAST, f'models.teacher_model.src_ckpt={teacher_ckpts("resnet56")}']
    last = 'resource/ckpt/cifar100/dkd/cifar100-resnet20_from_resnet56.last.pt'

    def train(stage, folder):
        """The DKD warm-up of every epoch in the run's metrics."""
        epochs = 1 if stage == 'interrupted' else 2
        summary = run_train(RunDescription(recipe=name, overrides=[*common, f'train.num_epochs={epochs}'], device='cpu',
                                           seed=0, quiet=True, resume=stage == 'resumed', test=False))
        records = [json.loads(line) for line in Path(summary['metrics']).read_text().splitlines()]
        return [r['warmup'] for r in records]

    runs = straight_and_resumed(tmp_path, train)
    # the resumed epoch 2 is warmed up by 2/20, as the uninterrupted one, not by 1/20 again
    assert runs.results['straight'] == runs.results['resumed'] == pytest.approx([0.05, 0.1])
    straight, resumed = runs.load(last)
    assert resumed['epoch'] == straight['epoch'] == 2
    for key, value in straight['model'].items():
        assert torch.equal(value, resumed['model'][key]), key


def test_a_dkd_warm_up_that_nothing_drives_is_refused_before_any_work(tmp_path, monkeypatch, cifar100_env,
                                                                      teacher_ckpts):
    monkeypatch.chdir(tmp_path)
    result = cli(['train', 'cifar100/dkd/resnet20_from_resnet56', '--device', 'cpu', '--check',
                  *[a for o in _overrides('cifar100/dkd/resnet20_from_resnet56.yaml', teacher_ckpts)
                    for a in ('--set', o)], '--set', 'train.pre_epoch_process=default_pre_epoch_process_with_teacher'],
                 tmp_path)
    line = one_error_line(result, 2, 'follows the epoch')
    assert "sub_terms.dkd.criterion (DKDLoss)" in line and "pre_epoch_process_with_frozen_teacher" in line
    assert not (tmp_path / 'resource').exists()


@pytest.mark.parametrize('base, method, beta, expected', [
    # a WTTM base (the CE inside WTTMLoss): DIST gets a CE term of its own, DIST's CIFAR-100 setting
    ('cifar100/wttm/resnet20_from_resnet56', 'dist', None, {'ce': None, 'dist': {'beta': 2.0, 'gamma': 2.0,
                                                                                'tau': 4.0}}),
    # a DIST base to WTTM: WTTMLoss holds the CE, the base's CE term goes
    ('cifar100/dist/resnet20_from_resnet56', 'wttm', 1.5, {'wttm': {'gamma': 0.8, 'beta': 1.5, 'alpha': 1.0}}),
    # CE + CRD to DKD: the CE stays, DKD joins it, CRD is kept; DKD's CIFAR-100 temperature and warm-up
    ('cifar100/crd/resnet20_from_resnet56', 'dkd', 8.0, {'ce': None, 'dkd': {'alpha': 1.0, 'beta': 8.0,
                                                                             'temperature': 4.0, 'warmup_epochs': 20},
                                                         'crd': None}),
    # DKD to DKD: the base's values carry over
    ('cifar100/dkd/resnet20_from_resnet56', 'dkd', None, {'ce': None, 'dkd': {'alpha': 1.0, 'beta': 2.0,
                                                                              'temperature': 4.0,
                                                                              'warmup_epochs': 20}}),
    # an ImageNet WTTM base: DKD's ImageNet setting (T 1, no warm-up)
    ('ilsvrc2012/wttm/resnet18_from_resnet34', 'dkd', 0.5, {'ce': None, 'dkd': {'alpha': 1.0, 'beta': 0.5,
                                                                                'temperature': 1.0,
                                                                                'warmup_epochs': 1}}),
])
def test_new_recipe_writes_dist_and_dkd_and_leaves_them(base, method, beta, expected, tmp_path, monkeypatch,
                                                         cifar100_env, image_root, torch_home, teacher_ckpts):
    monkeypatch.setenv('ILSVRC2012_ROOT', str(image_root))
    monkeypatch.setenv('TORCH_HOME', str(torch_home))
    cifar = base.startswith('cifar100/')
    teacher = f'resnet56:{teacher_ckpts("resnet56")}' if cifar else 'resnet50'
    student = 'wrn_16_2' if cifar else 'mobilenet_v1'
    result = cli(['new-recipe', '--from', base, '--teacher', teacher, '--student', student, '--method', method,
                  *(['--beta', str(beta)] if beta is not None else []), '-o', 'new.yaml'], tmp_path)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / 'new.yaml').read_text()
    terms = load_yaml_file(str(tmp_path / 'new.yaml'))['train']['criterion']['kwargs']['sub_terms']
    assert list(terms) == list(expected)
    for name, values in expected.items():
        if values is not None:
            kwargs = terms[name]['criterion']['kwargs']
            assert {k: kwargs[k] for k in values} == values, kwargs
    if 'ce' in expected:
        assert terms['ce']['criterion']['key'] == 'CrossEntropyLoss'
        assert ' beside cross entropy (weight 1).' in text
    assert f'/{method}' in load_yaml_file(str(tmp_path / 'new.yaml'))['models']['student_model']['dst_ckpt']
    check = cli(['train', 'new.yaml', '--device', 'cpu', '--check', *[a for o in FAST for a in ('--set', o)],
                 *(['--set', f'{SUB_TERMS}.crd.criterion.kwargs.num_samples=8'] if 'crd' in expected else [])],
                tmp_path)
    assert check.returncode == 0 and 'check passed' in check.stdout, check.stderr[-2000:]


def test_new_recipe_needs_dkds_beta_when_the_method_changes(tmp_path, teacher_ckpts):
    result = cli(['new-recipe', '--from', 'cifar100/wttm/resnet20_from_resnet56', '--teacher',
                  f'resnet56:{teacher_ckpts("resnet56")}', '--student', 'wrn_16_2', '--method', 'dkd', '-o', 'n.yaml'],
                 tmp_path)
    one_error_line(result, 2, "--method dkd: the base recipe uses wttm, whose beta does not carry over")
    assert not (tmp_path / 'n.yaml').exists()


@pytest.mark.parametrize('recipe, grid, key', [
    ('cifar100/dist/resnet20_from_resnet56', 'beta=1,2', 'dist.criterion.kwargs.beta'),
    ('cifar100/dist/resnet20_from_resnet56', 'gamma=1,2', 'dist.criterion.kwargs.gamma'),
    ('cifar100/dist/resnet20_from_resnet56', 'tau=2,4', 'dist.criterion.kwargs.tau'),
    ('cifar100/dkd/resnet20_from_resnet56', 'beta=1,2', 'dkd.criterion.kwargs.beta'),
    ('cifar100/dkd/resnet20_from_resnet56', 'temperature=2,4', 'dkd.criterion.kwargs.temperature'),
    ('cifar100/dkd/resnet20_from_resnet56', 'warmup_epochs=0,20', 'dkd.criterion.kwargs.warmup_epochs'),
    ('cifar100/wttm_itrd/resnet20_from_resnet56', 'beta=1,2', 'wttm.criterion.kwargs.beta'),
])
def test_sweep_short_names_reach_the_rivals_terms(recipe, grid, key, tmp_path, capsys, cifar100_env):
    assert main(['sweep', recipe, '--grid', grid, '--seeds', '0', '-o', str(tmp_path / 'out'), '--dry-run']) == 0
    out = capsys.readouterr().out
    for value in grid.partition('=')[2].split(','):
        assert f'--set {SUB_TERMS}.{key}={value}' in out, out


@pytest.mark.parametrize('grid, message', [
    ('beta=1,2', '--grid beta: {path} has several loss terms that set it (wttm (WTTMLoss), dist (ExactDISTLoss))'),
    ('gamma=0.5', '--grid gamma: {path} has several loss terms that set it (wttm (WTTMLoss), dist (ExactDISTLoss))'),
])
def test_a_short_name_two_terms_set_is_refused_in_one_line(grid, message, tmp_path, capsys, cifar100_env):
    text = (RECIPES / 'cifar100/dist/resnet20_from_resnet56.yaml').read_text()
    wttm = ("        wttm:\n          criterion:\n            key: 'WTTMLoss'\n            kwargs:\n"
            "              gamma: 0.3\n              beta: 1.5\n              alpha: 0.0\n          weight: 1.0\n")
    path = tmp_path / 'both.yaml'
    path.write_text(text.replace('        dist:\n', wttm + '        dist:\n', 1))
    assert main(['sweep', str(path), '--grid', grid, '-o', str(tmp_path / 'out'), '--dry-run']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.format(path=path) in err[0], err
    assert not (tmp_path / 'out').exists()


def test_dkd_short_names_that_dkd_lacks_are_refused(tmp_path, capsys, cifar100_env):
    assert main(['sweep', 'cifar100/dkd/resnet20_from_resnet56', '--grid', 'tau=1', '-o', str(tmp_path / 'o'),
                 '--dry-run']) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert '--grid tau:' in line and 'ExactDISTLoss term' in line
