"""User errors (damaged checkpoints, wrong recipe values, clashing outputs, bad data): each is one plain line, and
no run can clobber another."""
import hashlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import torch
import yaml
from conftest import FAST, TINY, cli, cli_env, one_error_line, one_per_family, run_cli

from ttm_torchdistill import recipe as recipes
from ttm_torchdistill.cli import main
from ttm_torchdistill.errors import UsageError
from ttm_torchdistill.runner.checkpoint import last_ckpt_path, load_checkpoint
from ttm_torchdistill.runner.lock import RunLock, lock_path

BEST = Path('ckpt/tiny/wttm/student.pt')
LAST = last_ckpt_path(BEST)
METRICS = BEST.with_name('student.metrics.jsonl')


def _snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes' digest, but for lock files (they name their last holder)."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob('*')) if p.is_file() and p.suffix != '.lock'}


@pytest.fixture(scope='module')
def trained(tmp_path_factory) -> Path:
    """A folder where the tiny recipe trained for one epoch (best and last checkpoints, metrics)."""
    folder = tmp_path_factory.mktemp('trained')
    result = cli(['train', TINY, '--device', 'cpu', '--seed', '0', '--set', 'train.num_epochs=1'], folder)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


@pytest.fixture
def run_dir(tmp_path, trained) -> Path:
    shutil.copytree(trained, tmp_path, dirs_exist_ok=True)
    return tmp_path


# -- checkpoints --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('damage', ['truncate', 'garbage', 'empty'])
def test_resume_from_a_damaged_checkpoint_names_the_file_and_keeps_it(run_dir, damage):
    last = run_dir / LAST
    data = last.read_bytes()
    last.write_bytes({'truncate': data[:len(data) // 2], 'garbage': os.urandom(4096), 'empty': b''}[damage])
    before = _snapshot(run_dir)
    result = cli(['train', TINY, '--device', 'cpu', '--resume', '--set', 'train.num_epochs=2'], run_dir)
    one_error_line(result, 2, str(LAST), 'unreadable')
    assert _snapshot(run_dir) == before


def test_any_garbage_in_a_checkpoint_file_is_unreadable_not_a_traceback(tmp_path):
    """Thousands of random files (unpickling random bytes sometimes raises MemoryError, OverflowError or TypeError:
    a length too big to allocate, an opcode given the wrong type): each is the one 'unreadable' error."""
    rng, path, kinds = random.Random(0), tmp_path / 'x.last.pt', set()
    for _ in range(4000):
        path.write_bytes(rng.randbytes(rng.choice((16, 256, 4096))))
        with pytest.raises(UsageError, match=r'--resume: checkpoint .*x\.last\.pt is unreadable') as caught:
            load_checkpoint(path, '--resume')
        kinds.add(str(caught.value).split('corrupt: ')[1].split(':')[0])
    assert {'UnpicklingError', 'MemoryError', 'OverflowError'} <= kinds, kinds


def test_resume_with_another_student_architecture_says_so(run_dir):
    before = _snapshot(run_dir)
    result = cli(['train', TINY, '--device', 'cpu', '--resume', '--allow-recipe-change',
                      '--set', 'train.num_epochs=2', '--set', 'models.student_model.kwargs.batch_norm=true'], run_dir)
    line = one_error_line(result, 2, f'checkpoint {LAST} was written for another model', 'tiny_cnn',
                           'keys missing', 'unexpected', 'first: missing 1.weight')
    assert len(line) < 400
    assert _snapshot(run_dir) == before


def test_test_command_with_a_corrupt_best_checkpoint(run_dir):
    best = run_dir / BEST
    best.write_bytes(best.read_bytes()[:100])
    before = _snapshot(run_dir)
    one_error_line(cli(['test', TINY, '--device', 'cpu'], run_dir), 2, str(BEST), 'unreadable')
    assert _snapshot(run_dir) == before


def test_teacher_src_ckpt_of_another_model(run_dir):
    # the tiny student's checkpoint has no batch-norm: the tiny teacher (batch_norm true) is another model
    teacher = f'{{key: tiny_cnn, kwargs: {{num_classes: 4, batch_norm: true}}, src_ckpt: {BEST}}}'
    result = cli(['train', TINY, '--device', 'cpu', '--set', f'models.teacher_model={teacher}',
                      '--set', 'models.student_model.dst_ckpt=other/student.pt'], run_dir)
    one_error_line(result, 2, f'checkpoint {BEST} was written for another model', 'models.teacher_model',
                    'keys missing')
    assert not (run_dir / 'other').exists() or not list((run_dir / 'other').glob('*.pt'))


# -- validation and building ----------------------------------------------------------------------------------------

@pytest.mark.parametrize('override, fragments', [
    ('train.num_epochs=abc', ["train.num_epochs='abc'", 'expected an integer >= 1']),
    ('train.optimizer.kwargs.lr=[1, 2]', ['train.optimizer.kwargs.lr=[1, 2]', 'expected a number > 0']),
    ('train.train_data_loader.kwargs.batch_size=-1', ['batch_size=-1', 'integer >= 1']),
    ('train.val_data_loader.kwargs.num_workers=1.5', ['num_workers=1.5', 'integer >= 0']),
    ('train.scheduler.kwargs.milestones=10', ['milestones=10', 'a list of integers']),
    ('train.optimizer.key=Adamx', ["train.optimizer.key='Adamx'", 'registered optimizer']),
    ('models.student_model.kwargs.num_classes=5', ['num_classes=5', 'differs from', 'teacher_model']),
    ('test.test_data_loader.kwargs={batch_size: 8, pin_memory: yes please}',
     ["test.test_data_loader.kwargs.pin_memory='yes please'", 'true or false']),
])
def test_a_wrong_value_is_one_line_naming_recipe_key_and_value(tmp_path, override, fragments):
    result = cli(['train', TINY, '--device', 'cpu', '--set', override], tmp_path)
    one_error_line(result, 2, str(TINY), *fragments)
    assert list(tmp_path.iterdir()) == []


def test_dst_ckpt_below_a_file(tmp_path):
    (tmp_path / 'taken').write_text('a file, not a folder\n')
    result = cli(['train', TINY, '--device', 'cpu', '--set', 'models.student_model.dst_ckpt=taken/run/s.pt'],
                     tmp_path)
    one_error_line(result, 2, "models.student_model.dst_ckpt='taken/run/s.pt'", 'is a file, not a folder')
    assert (tmp_path / 'taken').read_text() == 'a file, not a folder\n'


def test_teacher_and_student_outputs_that_disagree(tmp_path):
    # no num_classes to compare in the recipe: the forward on one sample finds it (3x16x16 images vs 4 classes)
    result = cli(['train', TINY, '--device', 'cpu', '--set', 'models.teacher_model.key=scaled_identity',
                      '--set', 'models.teacher_model.kwargs={factor: 2.0}'], tmp_path)
    one_error_line(result, 2, 'models.teacher_model (scaled_identity) outputs [1, 3, 16, 16]',
                    'models.student_model (tiny_cnn) outputs [1, 4]')


@pytest.mark.parametrize('override, fragments', [
    ('train.scheduler.kwargs={milestones: [1], gama: 0.1}', ['train.scheduler (MultiStepLR)', 'gama']),
    ('train.optimizer.kwargs={lr: 0.1, momentum: 0.9, betas: 3}', ['train.optimizer (SGD)', 'betas']),
    ('datasets.blobs/train.init.kwargs.size=abc', ['datasets.blobs/train (tiny.Blobs)', 'TypeError']),
    ('train.criterion.kwargs.sub_terms.wttm.criterion.kwargs={gamma: 0.8, temperature: 2.0}',
     ['train.criterion.kwargs.sub_terms.wttm.criterion (WTTMLoss)', 'exactly one of gamma and temperature']),
])
def test_a_recipe_part_that_fails_to_build_names_itself(tmp_path, override, fragments):
    one_error_line(cli(['train', TINY, '--device', 'cpu', '--set', override], tmp_path), 2, *fragments)


def test_check_builds_everything_and_writes_nothing(run_dir, tmp_path_factory):
    before = _snapshot(run_dir)
    assert not (run_dir / lock_path(BEST)).exists()  # a run that ended removed its lock file
    result = cli(['train', TINY, '--device', 'cpu', '--check', '--resume', '--set', 'train.num_epochs=2',
                      '--run-log', 'logs/run.log', '--summary', 'logs/s.json'], run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'check passed' in result.stdout
    assert _snapshot(run_dir) == before and not (run_dir / lock_path(BEST)).exists()
    assert not (run_dir / 'logs').exists()
    fresh = tmp_path_factory.mktemp('fresh')
    assert cli(['train', TINY, '--device', 'cpu', '--check'], fresh).returncode == 0
    assert list(fresh.iterdir()) == []
    # a loss reading an output no model provides is named before any step (train without --check too)
    result = cli(['train', TINY, '--device', 'cpu', '--check', '--set',
                      'train.criterion.kwargs.sub_terms.wttm.criterion.kwargs={gamma: 0.8, beta: 1.0, '
                      'student_module_path: head}'], fresh)
    one_error_line(result, 2, 'train.criterion (WeightedSumLoss)', "student_module_path='head'",
                   'the student provides no such output')
    assert cli(['test', TINY, '--device', 'cpu', '--check'], run_dir).returncode == 0
    assert _snapshot(run_dir) == before


# -- one run per checkpoint path ------------------------------------------------------------------------------------

def test_a_second_run_on_the_same_dst_ckpt_is_refused_and_the_first_is_untouched(tmp_path):
    slow = ['train', TINY, '--device', 'cpu', '--set', 'train.num_epochs=4', '--set',
            'datasets.blobs/train.init.kwargs={size: 32, seed: 0, delay: 0.05}']
    first = subprocess.Popen([sys.executable, '-m', 'ttm_torchdistill', *map(str, slow)], cwd=tmp_path,
                             env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / lock_path(BEST)
    deadline = time.time() + 120
    while not (lock.is_file() and lock.read_text().startswith(str(first.pid))):
        assert first.poll() is None and time.time() < deadline, first.communicate()
        time.sleep(0.1)
    second = cli(['train', TINY, '--device', 'cpu', '--set', 'train.num_epochs=4'], tmp_path)
    assert first.poll() is None, 'the first run ended before the second was refused: make it slower'
    one_error_line(second, 2, f'PID {first.pid} on {socket.gethostname()}', str(lock_path(BEST)))
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-3000:]
    epochs = [json.loads(line)['epoch'] for line in (tmp_path / METRICS).read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]


def test_a_killed_run_leaves_no_lock_behind_and_resume_removes_stale_temporaries(tmp_path):
    args = ['train', TINY, '--device', 'cpu', '--set', 'train.num_epochs=2']
    killed = run_cli(args, tmp_path, env=cli_env(TINY_KILL_AT=35))  # epoch 2's first sample (after 2 pre-flight reads)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert (tmp_path / lock_path(BEST)).read_text().split()[0].isdigit()  # the dead holder's PID stays as text
    stale = [tmp_path / f'{LAST}.k1f0a9.tmp', tmp_path / f'{BEST}.x7yy2b.tmp']
    for path in stale:
        path.write_bytes(b'half a checkpoint')
    keep = tmp_path / BEST.with_name('notes.tmp')
    keep.write_text('not ours\n')
    result = cli(args + ['--resume'], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not any(p.exists() for p in stale) and keep.exists()
    assert torch.load(tmp_path / LAST, weights_only=False)['epoch'] == 2


def test_under_torchrun_every_rank_is_refused_when_the_lock_is_held(tmp_path):
    lock = tmp_path / lock_path(BEST)
    lock.parent.mkdir(parents=True)
    held = RunLock(lock)  # this test process holds it, like another run would
    try:
        result = run_cli(['train', TINY, '--device', 'cpu'], tmp_path, torchrun_nproc=2)
    finally:
        held.release()
    assert result.returncode != 0
    assert result.stderr.count(f'ttm-distill: error: another run holds {lock_path(BEST)} (PID {os.getpid()}') == 2, \
        result.stderr[-3000:]
    # torchrun itself prints its agent's traceback when a child fails; the ranks print none of their own
    assert 'UsageError' not in result.stderr and 'train.py' not in result.stderr and not (tmp_path / LAST).exists()


# -- data errors ----------------------------------------------------------------------------------------------------

IMAGE_RECIPE = '''
dependencies:
  - name: 'ttm_torchdistill'
  - name: 'tiny'
datasets:
{datasets}
models:
  teacher_model: {{key: 'tiny_cnn', kwargs: {{num_classes: 2}}}}
  student_model: {{key: 'tiny_cnn', kwargs: {{num_classes: 2}}, dst_ckpt: 'ckpt/images/student.pt'}}
train:
  num_epochs: 1
  log_freq: 1
  pre_epoch_process: 'pre_epoch_process_with_frozen_teacher'
  train_data_loader:
    dataset_id: 'images/train'
    sampler: &sampler {{class_or_func: !import_get {{key: 'torch.utils.data.SequentialSampler'}}, kwargs: }}
    kwargs: &kwargs {{batch_size: 2, num_workers: {workers}}}
  val_data_loader: {{dataset_id: 'images/val', sampler: *sampler, kwargs: *kwargs}}
  teacher: {{forward_proc: 'forward_batch_only', requires_grad: False}}
  student: {{forward_proc: 'forward_batch_only', requires_grad: True}}
  optimizer: {{key: 'SGD', kwargs: {{lr: 0.1}}}}
  criterion:
    key: 'WeightedSumLoss'
    kwargs:
      sub_terms:
        wttm: {{criterion: {{key: 'WTTMLoss', kwargs: {{gamma: 0.8, beta: 1.0}}}}, weight: 1.0}}
test:
  test_data_loader: {{dataset_id: 'images/test', sampler: *sampler, kwargs: *kwargs}}
'''
SPLIT = '''  images/{split}: !import_call
    key: 'torchvision.datasets.ImageFolder'
    init:
      kwargs:
        root: '{root}/{split}'
        transform: !import_call {{key: 'torchvision.transforms.ToTensor', init: }}
'''


@pytest.mark.parametrize('split, workers', [('train', 0), ('train', 2), ('val', 0), ('test', 2)])
def test_an_unreadable_image_names_the_file_and_keeps_the_last_checkpoint(tmp_path, image_root, split, workers):
    root = tmp_path / 'images'
    shutil.copytree(image_root, root)
    shutil.copytree(root / 'val', root / 'test')
    recipe = tmp_path / 'images.yaml'
    recipe.write_text(IMAGE_RECIPE.format(workers=workers, datasets=''.join(SPLIT.format(split=s, root=root)
                                                                            for s in ('train', 'val', 'test'))))
    first = cli(['train', recipe, '--device', 'cpu'], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    before = _snapshot(tmp_path / 'ckpt')
    # the last image of the split (sorted order): read in the epoch, after the one-sample check at start-up
    bad = sorted((root / split).rglob('*.png'))[-1]
    bad.write_bytes(bad.read_bytes()[:60])  # a truncated PNG
    command = 'test' if split == 'test' else 'train'
    extra = ['--resume', '--set', 'train.num_epochs=2'] if command == 'train' else []
    result = cli([command, recipe, '--device', 'cpu', *extra], tmp_path)
    line = one_error_line(result, 1, f'cannot read data file {bad}')
    if command == 'train':
        assert 'the last good checkpoint is kept' in line
    assert _snapshot(tmp_path / 'ckpt') == before


# -- other commands -------------------------------------------------------------------------------------------------

def test_plot_on_a_file_that_is_not_json_lines(tmp_path):
    bad = tmp_path / 'run.metrics.jsonl'
    bad.write_text('{"epoch": 1, "train_loss": 1.0}\nepoch 2: loss 0.5\n')
    one_error_line(cli(['plot', bad], tmp_path), 2, str(bad), 'line 2')
    assert 'Traceback' in cli(['plot', bad, '--debug'], tmp_path).stderr
    (tmp_path / 'summary.json').write_bytes(b'\x00\xff not json')
    one_error_line(cli(['plot', 'summary.json'], tmp_path), 2, 'summary.json', 'not a --summary JSON')


def test_run_log_below_a_file(tmp_path):
    (tmp_path / 'f').write_text('x')
    one_error_line(cli(['train', TINY, '--device', 'cpu', '--run-log', 'f/run.log'], tmp_path), 2,
                    "--run-log='f/run.log'", 'is a file, not a folder')


# -- the systematic test --------------------------------------------------------------------------------------------

WRONG = ('abc', '[1, 2]', '-1')
"""a string, a list, a negative number: wrong for most of the runner's keys"""
COST = ('demo/', 'cifar100/', 'ilsvrc2012/')
"""recipes to prefer, cheapest first, when a value passes validation and the whole recipe must be checked"""


def _node(root: yaml.Node, keys) -> yaml.Node:
    for key in keys:
        root = next(v for k, v in root.value if k.value == key)
    return root


def _scalar_paths(node: yaml.Node, path: str):
    """Key paths of the plain scalars below ``node`` (not inside tagged nodes: torchdistill's constructors)."""
    if isinstance(node, yaml.ScalarNode) and node.tag.startswith('tag:yaml.org,2002:'):
        yield path
    elif isinstance(node, yaml.MappingNode) and node.tag.startswith('tag:yaml.org,2002:'):
        for k, v in node.value:
            if '.' not in k.value:  # --set splits keys at dots
                yield from _scalar_paths(v, f'{path}.{k.value}')


def test_every_wrong_value_in_every_family_of_shipped_recipes_is_one_line_or_accepted(tmp_path, monkeypatch, capsys,
                                                                           image_root, torch_home, cifar100_env):
    accepted, no_teacher_weights = defaultdict(list), set()
    variants = 0
    for name in one_per_family(recipes.list_recipes()):  # a family's recipes share their keys
        path = recipes.resolve_recipe(name)
        doc = recipes.RecipeDocument.open(path)
        root = doc.root
        doc.import_dependencies()
        teacher = next((v for k, v in _node(root, ['models']).value if k.value == 'teacher_model'), None)
        if teacher is not None and any(k.value == 'src_ckpt' for k, _ in teacher.value):
            no_teacher_weights.add(name)  # teacher checkpoints are trained elsewhere: random weights here
        paths = [*_scalar_paths(_node(root, ['train']), 'train'),
                 *_scalar_paths(_node(root, ['test', 'test_data_loader', 'kwargs']), 'test.test_data_loader.kwargs')]
        for key_path in paths:
            keys = key_path.split('.')
            original = _node(root, keys)
            for wrong in WRONG:
                variants += 1
                doc.set(keys, yaml.compose(wrong))
                try:
                    doc.validate()
                    accepted[key_path, wrong].append(name)
                except UsageError as exc:
                    message = str(exc)
                    assert '\n' not in message and message.startswith(f'{path}: ') and len(message) < 400, message
                    assert f'={yaml.safe_load(wrong)!r}: expected ' in message, message
                finally:
                    doc.set(keys, original)
    assert variants > 2000
    # values that validation leaves to the parts themselves (the losses' hyperparameters, module paths, file
    # names): the whole recipe is built and the loss computed on one batch (--check), once per key name and value
    # (a key name, e.g. student_module_path, means the same in every loss), in the cheapest recipe that has it
    by_key = defaultdict(list)
    for (key_path, wrong), names in accepted.items():
        by_key[key_path.rsplit('.', 1)[-1], wrong].extend((key_path, name) for name in names)
    monkeypatch.setenv('ILSVRC2012_ROOT', str(image_root))
    monkeypatch.setenv('TORCH_HOME', str(torch_home))
    monkeypatch.chdir(tmp_path)
    outcomes = {}
    for (_, wrong), candidates in sorted(by_key.items()):
        key_path, name = min(candidates, key=lambda c: (next(i for i, p in enumerate(COST) if c[1].startswith(p)),
                                                        c[1], c[0]))
        teacher = ['--set', 'models.teacher_model.src_ckpt=null'] if name in no_teacher_weights else []
        code = main(['train', name, '--device', 'cpu', '--check', *[a for o in FAST for a in ('--set', o)],
                     *teacher, '--set', f'{key_path}={wrong}'])
        out, err = capsys.readouterr()
        assert 'Traceback' not in err
        if code == 0:
            assert 'check passed' in out
        else:
            assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith('ttm-distill: error: '), err
        outcomes[key_path, wrong] = code
    assert list(tmp_path.iterdir()) == []  # --check wrote nothing
    assert 0 in outcomes.values() and 2 in outcomes.values(), outcomes
