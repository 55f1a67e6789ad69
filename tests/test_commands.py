"""Every command on the recipes we ship (generated data), and the rules every command keeps: outputs checked before
any work, nothing of an earlier run replaced, one line for each mistake."""
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import FAST, TINY, cli, cli_env, ok, one_error_line, run_cli
from test_deit_recipes import _small, teacher_ckpt  # noqa: F401  (teacher_ckpt: a module-scoped fixture)
from torchdistill.models.registry import get_model

from ttm_torchdistill.cli import main
from ttm_torchdistill.outputs import dumps_json
from ttm_torchdistill.recipe import RecipeDocument, RecipeView, list_recipes, resolve_recipe
from ttm_torchdistill.tools.new_recipe import new_recipe

BEST = Path('ckpt/tiny/wttm/student.pt')
SETS = [a for o in FAST for a in ('--set', o)]
LOSS = 'train.criterion.kwargs.sub_terms.wttm.criterion.kwargs'


def _errors(captured) -> list[str]:
    return [line for line in captured.err.splitlines() if line.startswith('ttm-distill')]


def _grid_and_sets(name: str, deit_ckpt: Path) -> tuple[list[str], list[str]]:
    """A grid the recipe's loss terms accept (a short name where there is one), and short-run overrides."""
    doc = RecipeDocument.open(resolve_recipe(name))
    keys = {t.key for t in doc.loss_terms()}
    grid = 'gamma=0.5,0.8' if keys & {'TTMLoss', 'WTTMLoss'} else 'temperature=2,4' if 'KDLoss' in keys else \
        'train.optimizer.kwargs.lr=0.01,0.02'
    sets = list(SETS)
    if doc.value('models.teacher_model.src_ckpt'):  # CIFAR-100 teachers are trained elsewhere: random weights here
        sets += ['--set', 'models.teacher_model.src_ckpt=null']
    if RecipeView(doc).model_key(RecipeView(doc).student_key) == 'timm_model':  # the DeiT recipes, at reduced size
        teacher = deit_ckpt if doc.has('models.teacher_model') else None
        sets = [a for o in _small(1, 0, teacher) for a in ('--set', o)]
    return ['--grid', grid], sets


@pytest.fixture
def shipped(monkeypatch, tmp_path, cifar100_env, image_root, torch_home):
    monkeypatch.setenv('ILSVRC2012_ROOT', str(image_root))
    monkeypatch.setenv('TORCH_HOME', str(torch_home))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize('name', list_recipes())
def test_sweep_dry_run_on_every_shipped_recipe(name, shipped, capsys, teacher_ckpt):  # noqa: F811
    grid, sets = _grid_and_sets(name, teacher_ckpt)
    assert main(['sweep', name, *grid, '--seeds', '0', *sets, '-o', 'sweep', '--dry-run']) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    runs = [line for line in out.splitlines() if '/seed0 ' in line and 'pending' in line]
    assert len(runs) == 2 and all(str(shipped / 'sweep') in r for r in runs)
    assert list(shipped.iterdir()) == []  # a dry run (and its recipe check) writes nothing


@pytest.mark.parametrize('base, method, beta', [('cifar100/wttm/resnet8x4_from_resnet32x4', 'wttm', None),
                                                ('ilsvrc2012/kd/resnet18_from_resnet34', 'ttm', 4.0)])
def test_what_new_recipe_writes_is_sweepable_and_claims_no_paper_number(shipped, capsys, base, method, beta):
    teacher = 'resnet34' if base.startswith('ilsvrc2012') else f'resnet56:{_cifar_teacher(shipped)}'
    path = new_recipe(base, teacher, 'resnet20' if 'cifar' in base else 'resnet18', method, beta=beta,
                      output='new.yaml')
    text = path.read_text()
    assert 'paper:' not in text.replace('# No `paper:` block', '') and 'top1:' not in text
    assert RecipeDocument(text, path).value('paper') is None
    sets = [*SETS, '--set', 'models.teacher_model.src_ckpt=null'] if 'cifar' in base else SETS
    assert main(['sweep', str(path), '--grid', 'gamma=0.5,0.8', '--seeds', '0', *sets, '-o', 'sweep',
                 '--dry-run']) == 0
    assert len([line for line in capsys.readouterr().out.splitlines() if 'pending' in line]) == 2


def _cifar_teacher(folder: Path) -> Path:
    """A resnet56 teacher file in the CRD benchmark's format (random weights)."""
    path = folder / 'resnet56.pth'
    torch.save({'model': get_model('resnet56', num_classes=100).state_dict()}, path)
    return path


def test_changing_the_method_needs_beta(shipped):
    with pytest.raises(Exception, match="--method ttm: the base recipe uses wttm, whose beta does not carry over"):
        new_recipe('ilsvrc2012/wttm/resnet18_from_resnet34', 'resnet34', 'resnet18', 'ttm', output='x.yaml')
    assert not (shipped / 'x.yaml').exists()


def test_a_real_sweep_of_a_shipped_cifar_recipe_then_table_and_plot(tmp_path, cifar100_env):
    result = cli(['sweep', 'cifar100/wttm/resnet8x4_from_resnet32x4', '--grid', 'gamma=0.1,0.2', '--seeds', '0',
                  *SETS, '--set', 'models.teacher_model.src_ckpt=null', '-o', 'sw'], tmp_path)
    ok(result)
    table = cli(['table', 'sw', '--format', 'json'], tmp_path)
    rows = json.loads(table.stdout)['rows']
    assert sorted(r['values']['gamma'] for r in rows) == ['0.1', '0.2'] and all(r['finished'] == 1 for r in rows)
    plot = cli(['plot', 'sw', '-o', 'sw.png'], tmp_path)
    assert plot.returncode == 0 and (tmp_path / 'sw.png').is_file(), plot.stderr
    assert not (tmp_path / 'resource').exists()  # every output of every run stayed in the sweep folder


# -- outputs are checked before any work -------------------------------------------------------------------------

@pytest.fixture
def below_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('PYTHONPATH', cli_env()['PYTHONPATH'])
    (tmp_path / 'f').write_text('a file\n')
    (tmp_path / 'm.metrics.jsonl').write_text('{"epoch": 1, "train_loss": 1.0, "val_top1": 50.0}\n')
    (tmp_path / 's.json').write_text(json.dumps({'recipe': 'r', 'best_val_top1': 1.0, 'student_test_top1': 1.0}))
    return tmp_path


@pytest.mark.parametrize('args, flag', [
    (['train', TINY, '--summary', 'f/s.json'], '--summary'),
    (['train', TINY, '--run-log', 'f/run.log'], '--run-log'),
    (['train', TINY, '--tensorboard', 'f/tb'], '--tensorboard'),
    (['train', TINY, '--set', 'models.student_model.dst_ckpt=f/student.pt'], 'dst_ckpt'),
    (['test', TINY, '--summary', 'f/s.json'], '--summary'),
    (['calibrate', TINY, '-o', 'f/cal'], '-o'),
    (['calibrate', TINY, '--summary', 'f/cal.json'], '--summary'),
    (['plot', 'm.metrics.jsonl', '-o', 'f/p.png'], '-o'),
    (['table', 's.json', '-o', 'f/t.md'], '-o'),
    (['new-recipe', '--from', 'ilsvrc2012/wttm/resnet18_from_resnet34', '--teacher', 'resnet34', '--student',
      'resnet18', '--method', 'wttm', '-o', 'f/r.yaml'], '-o'),
    (['sweep', TINY, '--grid', 'gamma=0.5', '-o', 'f/sweep'], '-o'),
])
def test_an_output_path_below_a_file_is_one_line_before_any_work(below_a_file, capsys, args, flag):
    before = sorted(p.name for p in below_a_file.iterdir())
    start = time.perf_counter()
    assert main([str(a) for a in args]) == 2
    errors = _errors(capsys.readouterr())
    assert len(errors) == 1 and flag in errors[0] and 'f/' in errors[0], errors
    assert sorted(p.name for p in below_a_file.iterdir()) == before  # no checkpoint, log or folder was made
    assert time.perf_counter() - start < 30


def test_a_summary_naming_a_folder_is_refused_before_training(below_a_file, capsys):
    (below_a_file / 'results').mkdir()
    assert main(['train', str(TINY), '--summary', 'results']) == 2
    assert 'is a folder' in _errors(capsys.readouterr())[0] and not (below_a_file / 'ckpt').exists()


# -- nothing of an earlier run is replaced ------------------------------------------------------------------------

def test_test_with_the_same_options_writes_beside_the_training_files(tmp_path):
    opts = ['--device', 'cpu', '--run-log', 'runs/a.log', '--summary', 'runs/a.json']
    assert cli(['train', TINY, *opts], tmp_path).returncode == 0
    runs = tmp_path / 'runs'
    train_files = {p.name: p.read_bytes() for p in runs.iterdir()}
    assert json.loads(train_files['a.json'])['kind'] == 'train'
    for n in ('', '.2'):
        result = cli(['test', TINY, *opts], tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        assert f'--summary runs/a.json exists: this test writes {Path("runs") / f"a.test{n}.json"}' in result.stdout
        summary = json.loads((runs / f'a.test{n}.json').read_text())
        assert summary['kind'] == 'test' and summary['student_test_top1'] is not None
        assert (runs / f'a.test{n}.log').is_file()
    assert {name: (runs / name).read_bytes() for name in train_files} == train_files  # untouched


@pytest.mark.parametrize('extra, fragment', [
    (['--run-log', 'runs/a.log'], "--run-log='runs/a.log': the file exists"),
    (['--summary', 'runs/a.json'], "--summary='runs/a.json': the file exists"),
])
def test_a_second_run_never_replaces_the_first_runs_files(tmp_path, extra, fragment):
    first = ['--device', 'cpu', '--run-log', 'runs/a.log', '--summary', 'runs/a.json']
    assert cli(['train', TINY, *first], tmp_path).returncode == 0
    before = {p: p.read_bytes() for p in tmp_path.rglob('*') if p.is_file()}
    second = ['--set', 'models.student_model.dst_ckpt=ckpt/other/student.pt', *extra]
    one_error_line(cli(['train', TINY, '--device', 'cpu', *second], tmp_path), 2, fragment)
    assert {p: p.read_bytes() for p in tmp_path.rglob('*') if p.is_file() and 'other' not in str(p)} == before


def test_metrics_and_best_checkpoint_of_an_earlier_run_are_not_replaced(tmp_path):
    assert cli(['train', TINY, '--device', 'cpu'], tmp_path).returncode == 0
    (tmp_path / 'ckpt/tiny/wttm/student.last.pt').unlink()  # e.g. cleaned up by hand: the rest stays precious
    one_error_line(cli(['train', TINY, '--device', 'cpu'], tmp_path), 2, 'student.pt exists (the best checkpoint')


def test_resume_refuses_another_experiment_and_accepts_more_epochs(tmp_path):
    assert cli(['train', TINY, '--device', 'cpu', '--set', 'train.num_epochs=1'], tmp_path).returncode == 0
    line = one_error_line(cli(['train', TINY, '--device', 'cpu', '--resume', '--set', f'{LOSS}.gamma=0.5'],
                                  tmp_path), 2, '--resume: the recipe differs', f'{LOSS}.gamma (0.8 -> 0.5)',
                          '--allow-recipe-change')
    assert 'student.last.pt' in line
    one_error_line(cli(['train', TINY, '--device', 'cpu', '--resume', '--set', 'train.optimizer.key=Adam'],
                           tmp_path), 2, 'train.optimizer.key (SGD -> Adam)')
    more = cli(['train', TINY, '--device', 'cpu', '--resume', '--set', 'train.num_epochs=2'], tmp_path)
    assert more.returncode == 0 and 'resumed from' in more.stdout, more.stderr[-2000:]
    changed = cli(['train', TINY, '--device', 'cpu', '--resume', '--allow-recipe-change', '--set',
                       'train.num_epochs=3', '--set', f'{LOSS}.gamma=0.5'], tmp_path)
    assert changed.returncode == 0 and f'{LOSS}.gamma: 0.8 -> 0.5 (--allow-recipe-change)' in changed.stdout


@pytest.mark.parametrize('mask', [0o022, 0o077])
def test_results_get_the_mode_the_umask_gives_like_logs(tmp_path, mask):
    result = subprocess.run(['bash', '-c', f'umask {mask:03o} && exec "$0" -m ttm_torchdistill "$@"',
                             sys.executable, 'train', str(TINY), '--device', 'cpu', '--set', 'train.num_epochs=1',
                             '--run-log', 'run.log', '--summary', 's.json'], cwd=tmp_path, env=cli_env(),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    for path in (tmp_path / BEST, tmp_path / 'ckpt/tiny/wttm/student.last.pt', tmp_path / 's.json',
                 tmp_path / 'run.log', tmp_path / 'run.metrics.jsonl'):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask, path


def test_json_we_write_is_strict():
    assert dumps_json({'a': float('nan'), 'b': [float('inf'), 1.5]}, indent=None) == '{"a": null, "b": [null, 1.5]}'


# -- full and read-only disks -------------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 16 KiB tmpfs (root only): a checkpoint does not fit."""
    mount = tmp_path / 'disk'
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which('mount') is None:
        pytest.skip('mounting a small tmpfs needs root')
    done = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=16k', 'tmpfs', str(mount)], capture_output=True)
    if done.returncode:
        pytest.skip(f'cannot mount a tmpfs here: {done.stderr.decode().strip()}')
    try:
        yield mount
    finally:
        subprocess.run(['umount', '-l', str(mount)], check=False)


def test_a_full_disk_is_one_line_and_nothing_half_written_looks_finished(tmp_path, small_disk):
    result = cli(['train', TINY, '--device', 'cpu', '--set', f'models.student_model.dst_ckpt={small_disk}/s.pt',
                      '--summary', 's.json'], tmp_path)
    line = one_error_line(result, 1, f'cannot write {small_disk}', 'No space left on device')
    assert '.tmp' not in line
    assert not any(p.name.endswith('.tmp') for p in small_disk.iterdir())  # no torn temporary is left
    for ckpt in small_disk.glob('*.pt'):  # what was written is whole
        assert 'model' in torch.load(ckpt, weights_only=False)
    assert not (tmp_path / 's.json').exists()  # the run does not look finished


def test_a_read_only_disk_is_refused_before_any_work(tmp_path, small_disk):
    subprocess.run(['mount', '-o', 'remount,ro', str(small_disk)], check=True)
    result = cli(['train', TINY, '--device', 'cpu', '--summary', f'{small_disk}/s.json'], tmp_path)
    one_error_line(result, 2, f"--summary='{small_disk}/s.json': no permission to write")
    assert not (tmp_path / 'ckpt').exists()


# -- data, model and loss mistakes before training ----------------------------------------------------------------

@pytest.mark.parametrize('sets, fragments', [
    (['datasets.blobs/val.init.kwargs.size=0'], ['train.val_data_loader: datasets.blobs/val is empty']),
    (['train.train_data_loader.kwargs={batch_size: 64, num_workers: 0, drop_last: true}'],
     ['train.train_data_loader: an epoch has 0 iterations', 'batch size 64']),
    ([f'{LOSS}={{gamma: 0.8, beta: 1.0, student_module_path: fc}}'],
     ["student_module_path='fc'", 'the student provides no such output']),
    (['train.train_data_loader.kwargs.batch_size=99999999999'], ['batch_size=99999999999', '2147483647']),
])
def test_empty_splits_and_missing_model_outputs_are_one_line_before_training(tmp_path, sets, fragments):
    args = ['train', TINY, '--device', 'cpu', *[a for s in sets for a in ('--set', s)]]
    one_error_line(cli(args, tmp_path), 2, *fragments)
    assert not (tmp_path / 'ckpt').exists() or not any((tmp_path / 'ckpt').rglob('*.pt'))


def test_a_wrong_cifar_root_is_one_line_also_with_check(tmp_path, monkeypatch):
    monkeypatch.setenv('CIFAR100_ROOT', str(tmp_path / 'nowhere'))
    for extra in ([], ['--check']):
        result = cli(['train', 'cifar100/ce/resnet8x4', *extra], tmp_path)
        one_error_line(result, 2, f"under '{tmp_path / 'nowhere'}'", 'docs/recipes/cifar100.md', 'Data')


def test_under_torchrun_a_rank_that_cannot_read_an_image_is_the_only_error(tmp_path, image_root):
    from test_user_errors import IMAGE_RECIPE, SPLIT

    root = tmp_path / 'images'
    shutil.copytree(image_root, root)
    shutil.copytree(root / 'val', root / 'test')
    bad = sorted((root / 'train').rglob('*.png'))[-1]
    bad.write_bytes(bad.read_bytes()[:60])
    recipe = tmp_path / 'images.yaml'
    recipe.write_text(IMAGE_RECIPE.format(workers=0, datasets=''.join(SPLIT.format(split=s, root=root)
                                                                      for s in ('train', 'val', 'test'))))
    start = time.perf_counter()
    result = run_cli(['train', recipe, '--device', 'cpu', '--set', 'train.log_freq=1'], tmp_path, torchrun_nproc=2)
    assert result.returncode != 0 and time.perf_counter() - start < 120
    ours = [line for line in result.stderr.splitlines() if line.startswith('ttm-distill')]
    assert len(ours) == 1 and f'cannot read data file {bad}' in ours[0], result.stderr[-3000:]
    assert 'Connection closed by peer' not in result.stderr and 'pair.cc' not in result.stderr


def test_calibrate_shows_progress_warns_on_the_test_set_and_writes_its_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv('PYTHONPATH', cli_env()['PYTHONPATH'])
    assert main(['calibrate', str(TINY), '--device', 'cpu', '--split', 'test', '-o', 'cal', '--summary',
                 'cal.json']) == 0
    out = capsys.readouterr().out
    assert 'calibrate: teacher on test.test_data_loader, batch 2/2' in out
    assert "warning: calibrating on test.test_data_loader (blobs/val), the recipe's test set" in out
    summary = json.loads((tmp_path / 'cal.json').read_text())
    assert summary['kind'] == 'calibrate' and summary['split'] == 'test' and summary['samples'] == 16
    assert summary == json.loads(next((tmp_path / 'cal').glob('*.calibration.json')).read_text())
    assert main(['calibrate', str(TINY), '--device', 'cpu', '-o', 'cal', '--summary', 'cal.json']) == 2
    assert "--summary='cal.json': the file exists" in _errors(capsys.readouterr())[0]
