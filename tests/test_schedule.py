"""Learning-rate schedules: one counted in iterations and stepped otherwise is refused in one line; --resume with
another num_epochs (or a schedule changed with --allow-recipe-change) continues exactly as a straight run of the
resumed recipe has it at that point, on the recipes we ship."""
import json

import pytest
import torch
from conftest import FAST, TINY, cli, one_error_line, straight_and_resumed
from torch.optim.optimizer import register_optimizer_step_pre_hook

from ttm_torchdistill.description import RunDescription
from ttm_torchdistill.runner import run_train

DEIT = 'ilsvrc2012/wttm/deit_tiny_from_deit3_small'


def _small(teacher: str, epochs: int) -> list[str]:
    """The DeiT recipe at 32 x 32 on the generated ImageFolder (8 training images: 2 iterations of 4 an epoch)."""
    return ['datasets.ilsvrc2012/train.init.kwargs.transform.init.kwargs.input_size=32', *FAST,
            f'train.num_epochs={epochs}', 'train.scheduler.kwargs.warmup_epochs=1',
            f'models.teacher_model.kwargs.checkpoint={teacher}']


@pytest.fixture
def imagenet(monkeypatch, tmp_path, image_root):
    pytest.importorskip('timm')
    monkeypatch.setenv('ILSVRC2012_ROOT', str(image_root))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize('override, fragment', [
    ('train.scheduler.scheduling_step=0', 'scheduling_step 0 steps it once per epoch; it counts iterations: set '
                                          'train.scheduler.scheduling_step: 1'),
    ('train.optimizer={key: adamw_no_decay_norm_bias_tokens, filters_params: False, grad_accum_step: 2, '
     'kwargs: {lr: 0.001}}', '2 training iterations per epoch in this process, stepped every 2'),
])
def test_a_per_iteration_schedule_stepped_otherwise_is_refused(imagenet, deit_teacher, override, fragment):
    sets = [arg for o in [*_small(deit_teacher, 2), override] for arg in ('--set', o)]
    one_error_line(cli(['train', DEIT, '--device', 'cpu', '--check', *sets], imagenet), 2,
                   'train.scheduler (warmup_cosine_lr): kwargs.iterations_per_epoch=2 but the scheduler is stepped',
                   fragment)


class Lrs:
    """The learning rate of every optimizer step of the runs made while it records."""

    def __enter__(self):
        self.lrs = []
        self.handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: self.lrs.append(
            [group['lr'] for group in opt.param_groups]))
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_resume_with_more_epochs_follows_a_straight_run_of_the_new_length(imagenet, deit_teacher, capsys):
    def train(stage, folder):
        """The learning rate of every step, and the summary. The resume has no --allow-recipe-change: num_epochs may
        change freely, also where the schedule names it."""
        epochs = 2 if stage == 'interrupted' else 4
        overrides = [*_small(deit_teacher, epochs), f'models.student_model.dst_ckpt={folder}/s.pt']
        with Lrs() as lrs:
            summary = run_train(RunDescription(recipe=DEIT, overrides=overrides, device='cpu', seed=0,
                                               resume=stage == 'resumed', test=False))
        return lrs.lrs, summary

    runs = straight_and_resumed(imagenet, train).results
    (straight, _), (first, _), (resumed, summary) = (runs[s] for s in ('straight', 'interrupted', 'resumed'))
    assert first[:2] == straight[:2]  # one warm-up epoch: the same steps, whatever the length
    assert summary['epochs_run'] == 2
    assert resumed == straight[4:] and len(resumed) == 4  # bit for bit, not the old schedule's end
    assert 'rebuilt as a straight run of this recipe has it after epoch 2' in capsys.readouterr().out


def test_resume_with_fewer_epochs_than_done_is_one_line(imagenet, deit_teacher):
    sets = [arg for o in _small(deit_teacher, 3) for arg in ('--set', o)]
    assert cli(['train', DEIT, '--device', 'cpu', *sets, '--no-test'], imagenet).returncode == 0
    shorter = [*sets, '--set', 'train.num_epochs=2']
    one_error_line(cli(['train', DEIT, '--device', 'cpu', *shorter, '--resume'], imagenet), 2,
                   'has done 3 epochs; train.num_epochs=2 leaves none to train')


def test_a_changed_learning_rate_accepted_on_resume_is_the_new_schedule(tmp_path):
    """MultiStepLR at epoch 1 (x0.1): resumed after epoch 1 with lr 0.2 instead of 0.1, epoch 2 trains at 0.02, as a
    straight run with 0.2 does (the saved schedule would give 0.01)."""
    first = cli(['train', TINY, '--device', 'cpu', '--set', 'train.num_epochs=1'], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    args = ['train', TINY, '--device', 'cpu', '--resume', '--set', 'train.optimizer.kwargs.lr=0.2']
    one_error_line(cli(args, tmp_path), 2, 'the recipe differs', 'train.optimizer.kwargs.lr (0.1 -> 0.2)')
    result = cli([*args, '--allow-recipe-change'], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = (tmp_path / 'ckpt/tiny/wttm/student.metrics.jsonl').read_text()
    records = [json.loads(line) for line in metrics.splitlines()]
    assert [r['epoch'] for r in records] == [1, 2] and records[1]['lr'] == pytest.approx(0.02, rel=1e-12)


def test_reduce_on_plateau_gets_the_validation_top1_and_a_changed_one_is_refused_on_resume(tmp_path):
    plateau = 'train.scheduler={key: ReduceLROnPlateau, kwargs: {mode: max, patience: 0, factor: 0.5}}'
    first = cli(['train', TINY, '--device', 'cpu', '--set', 'train.num_epochs=2', '--set', plateau], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]  # torchdistill's runner passes the metric too
    ckpt = torch.load(tmp_path / 'ckpt/tiny/wttm/student.last.pt', weights_only=False)
    assert ckpt['lr_scheduler']['best'] is not None
    changed = plateau.replace('patience: 0', 'patience: 3')
    one_error_line(cli(['train', TINY, '--device', 'cpu', '--set', 'train.num_epochs=3', '--set', changed, '--resume',
                        '--allow-recipe-change'], tmp_path), 2, 'train.scheduler (ReduceLROnPlateau) differs',
                   'cannot be replayed')
    again = cli(['train', TINY, '--device', 'cpu', '--set', 'train.num_epochs=3', '--set', plateau, '--resume'],
                tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
