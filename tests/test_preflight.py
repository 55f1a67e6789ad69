"""Before any work, one line: what an epoch would feed a loss or model that it cannot take (ITRD's last batch of one
sample, feature sizes that do not match the hooked modules, batch norm on one sample). A training step that fails in
a real run is one line naming the recipe part, and the last good checkpoint is kept."""

import pytest
from conftest import FAST, TINY, accept_generated_cifar, cli, make_cifar100, one_error_line

ITRD = 'cifar100/itrd/resnet8x4_from_resnet32x4'
WTTM_ITRD = 'cifar100/wttm_itrd/resnet8x4_from_resnet32x4'
SETS = [arg for override in FAST for arg in ('--set', override)]


def _teacher(teacher_ckpts, key='resnet32x4') -> list[str]:
    return ['--set', f'models.teacher_model.src_ckpt={teacher_ckpts(key)}']


@pytest.fixture
def nine(tmp_path, monkeypatch):
    """CIFAR-100 files with 9 training images: batches of 4 leave a last batch of one sample."""
    accept_generated_cifar(monkeypatch, make_cifar100(tmp_path / 'data', train=9, test=4))
    (tmp_path / 'work').mkdir()
    return tmp_path / 'work'


@pytest.mark.parametrize('name', [ITRD, WTTM_ITRD])
@pytest.mark.parametrize('check', [False, True], ids=['train', 'check'])
def test_itrd_refuses_a_last_batch_of_one_sample_before_any_work(nine, teacher_ckpts, name, check):
    args = ['train', name, '--device', 'cpu', *SETS, *_teacher(teacher_ckpts), '--run-log', 'logs/run.log',
            *(['--check'] if check else [])]
    one_error_line(cli(args, nine), 2, 'train.train_data_loader: the last batch of each epoch holds 1 sample(s) '
                   '(9 samples per process in batches of 4)',
                   'train.criterion.kwargs.sub_terms.itrd.criterion (ITRDLoss) needs at least 2 per batch',
                   'drop_last: True')
    assert list(nine.iterdir()) == []  # no log, no checkpoint folder, no lock file


def test_with_drop_last_the_same_run_trains(nine, teacher_ckpts):
    args = ['train', ITRD, '--device', 'cpu', *SETS, *_teacher(teacher_ckpts),
            '--set', 'train.train_data_loader.kwargs.drop_last=True']
    result = cli(args, nine)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize('override, fragments', [
    (['--set', 'train.student.auxiliary_model_wrapper.kwargs.in_features=64'],
     ['train.student.auxiliary_model_wrapper (Linear4ITRD)', 'Linear4ITRD: in_features=64',
      "the output of 'model.avgpool' has 256 features"]),
    (['--set', 'models.teacher_model.key=resnet56'],
     ['train.criterion.kwargs.sub_terms.itrd.criterion (ITRDLoss)', 'ITRDLoss: teacher_feature_size=256',
      "the teacher's 'avgpool' (output) has 64 features"]),
])
@pytest.mark.parametrize('check', [False, True], ids=['train', 'check'])
def test_itrd_feature_sizes_that_do_not_fit_are_one_line_before_any_work(tmp_path, cifar100_env, teacher_ckpts,
                                                                         override, fragments, check):
    teacher = 'resnet56' if 'resnet56' in override[-1] else 'resnet32x4'
    args = ['train', WTTM_ITRD, '--device', 'cpu', *SETS, *override, *_teacher(teacher_ckpts, teacher),
            '--run-log', 'run.log', *(['--check'] if check else [])]
    line = one_error_line(cli(args, tmp_path), 2, *fragments)
    assert 'before training' in line or check
    assert list(tmp_path.iterdir()) == []


def test_batch_norm_on_a_last_batch_of_one_sample_is_refused_before_any_work(tmp_path):
    args = ['train', TINY, '--device', 'cpu', '--set', 'datasets.blobs/train.init.kwargs={size: 33, seed: 0}',
            '--set', 'models.student_model.kwargs={num_classes: 4, norm_head: True}']
    one_error_line(cli(args, tmp_path), 2, 'models.student_model (tiny_cnn): the training step on 1 sample(s)',
                   'Expected more than 1 value per channel', 'the last batch of each epoch holds 1 sample',
                   'drop_last: True')
    assert list(tmp_path.iterdir()) == []
    drop_last = 'train.train_data_loader.kwargs={batch_size: 8, num_workers: 0, drop_last: True}'
    assert cli([*args, '--set', drop_last], tmp_path).returncode == 0


@pytest.mark.parametrize('fail_at, where, kept', [
    (4, 'epoch 1, iteration 3 (8 samples)', ''),  # call 1 is the pre-flight step; 4 iterations an epoch
    (7, 'epoch 2, iteration 2 (8 samples)', ' (ckpt/tiny/wttm/student.last.pt)'),
])
def test_a_loss_that_fails_in_a_real_run_is_one_line_and_the_last_checkpoint_stays(tmp_path, fail_at, where, kept):
    args = ['train', TINY, '--device', 'cpu', '--run-log', 'run.log', '--set',
            f'train.criterion.kwargs.sub_terms.wttm.criterion={{key: FailAtCall, kwargs: {{fail_at: {fail_at}}}}}']
    one_error_line(cli(args, tmp_path), 1, 'train.criterion.kwargs.sub_terms.wttm.criterion (FailAtCall): the '
                   f'training step at {where} fails: ValueError: cannot take call {fail_at}',
                   f'training stopped, the last good checkpoint is kept{kept}')
    assert (tmp_path / 'ckpt/tiny/wttm/student.last.pt').is_file() == bool(kept)
    assert not (tmp_path / 'ckpt/tiny/wttm/student.pt.lock').exists()
    assert 'training' in (tmp_path / 'run.log').read_text()  # the log of the run so far stays


@pytest.mark.parametrize('command, what, code', [('train', 'the validation pass after epoch 1', 1),
                                                  ('test', 'the test pass', 1)])
def test_a_model_that_fails_in_a_validation_or_test_pass_is_one_line(tmp_path, command, what, code):
    """(The tiny student raises torch's out-of-memory error for evaluation batches above 2 images.)"""
    limit = ['--set', 'models.student_model.kwargs={num_classes: 4, eval_batch_limit: 2}']
    if command == 'test':
        assert cli(['train', TINY, '--device', 'cpu', '--set', 'train.num_epochs=1'], tmp_path).returncode == 0
    one_error_line(cli([command, TINY, '--device', 'cpu', *limit], tmp_path), code,
                   f'models.student_model (tiny_cnn): {what} fails: OutOfMemoryError: out of memory (a stand-in',
                   *(['training stopped'] if command == 'train' else []))


@pytest.mark.parametrize('check', [False, True], ids=['train', 'check'])
def test_dkd_behind_a_mixup_cutmix_collate_is_refused_naming_the_collate(tmp_path, check):
    """DKD needs one class index per sample; a Mixup/CutMix collate (the DeiT recipes') gives soft targets."""
    text = TINY.read_text().replace('''      batch_size: 8
      num_workers: 0
  val_data_loader:''', '''      batch_size: 8
      num_workers: 0
    collate_fn: !import_call
      key: 'ttm_torchdistill.data.mixup_cutmix_collate'
      init: {kwargs: {num_classes: 4}}
  val_data_loader:''', 1)
    recipe = tmp_path / 'dkd_mixup.yaml'
    wttm = ("key: 'WTTMLoss'\n            kwargs:\n              gamma: 0.8\n              beta: 1.6\n"
            '              alpha: 1.0')
    dkd = "key: 'DKDLoss'\n            kwargs: {beta: 8.0, temperature: 4.0, warmup_epochs: 0}"
    assert wttm in text
    recipe.write_text(text.replace(wttm, dkd))
    args = ['train', recipe, '--device', 'cpu', *(['--check'] if check else [])]
    one_error_line(cli(args, tmp_path), 2, 'sub_terms.wttm.criterion (DKDLoss) needs one class index per sample',
                   'train.train_data_loader.collate_fn (mixup_cutmix(num_classes=4', 'gives soft targets')
    assert not (tmp_path / 'ckpt').exists()
    # the same recipe with WTTM (whose cross entropy takes soft targets) passes
    recipe.write_text(text)
    assert cli(['train', recipe, '--device', 'cpu', '--check'], tmp_path).returncode == 0
