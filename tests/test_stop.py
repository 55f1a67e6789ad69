"""A stop request (SIGUSR2, SLURM's warning before a time limit or a preemption): every rank finishes its step, rank 0
writes a resume checkpoint of the place in the epoch, the command exits 75 with one line, and --resume continues to
the same weights, optimizer, generators and metrics as a run never stopped (on the CPU, same number of processes)."""
import json
import re

import pytest
import torch
from conftest import FAST, SAME_IN_CHECKPOINTS, TINY, _records, cli_env, ok, run_cli, same_values

LAST = 'ckpt/tiny/wttm/student.last.pt'
EPOCHS = ['--set', 'train.num_epochs=3']


def _train(folder, *extra, env=None, nproc=None):
    folder.mkdir(parents=True, exist_ok=True)
    return run_cli(['train', TINY, '--device', 'cpu', '--seed', '0', '--run-log', 'run.log', '--summary',
                    'summary.json', *EPOCHS, *extra], folder, env=env or cli_env(), torchrun_nproc=nproc)


def _stopped_line(result) -> str:
    assert result.returncode == 75, result.stdout[-2000:] + result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith('ttm-distill: ')]
    assert lines and 'Traceback' not in result.stderr, result.stderr[-3000:]
    return lines[0]


def _assert_same_training(a, b) -> None:
    for name in (LAST, LAST.replace('.last', '')):
        x, y = (torch.load(folder / name, map_location='cpu', weights_only=False) for folder in (a, b))
        for key in SAME_IN_CHECKPOINTS:
            assert same_values(x.get(key), y.get(key)), (name, key)
        assert 'position' not in y
    assert _records(a / 'run.metrics.jsonl') == _records(b / 'run.metrics.jsonl')
    assert json.loads((a / 'summary.json').read_text())['best_val_top1'] == \
        json.loads((b / 'summary.json').read_text())['best_val_top1']


@pytest.mark.parametrize('workers', [0])
def test_a_run_stopped_inside_an_epoch_resumes_bit_exactly(tmp_path, workers):
    """4 iterations an epoch. Without workers the signal comes as iteration 2 of epoch 2 loads (sample 45), so the
    run stops after it. Two workers (new ones each epoch) load 16 samples each an epoch: each sends the signal to the
    training process as it loads its 12th, in its second batch of epoch 1 (prefetching decides the step it lands in);
    the replayed batches then put every worker's stream back where it was."""
    loader = ['--set', f'train.train_data_loader.kwargs.num_workers={workers}']
    ok(_train(tmp_path / 'straight', *loader))
    stopped = tmp_path / 'stopped'
    line = _stopped_line(_train(stopped, *loader, env=cli_env(TINY_SIGNAL_AT=12 if workers else 45,
                                                              TINY_SIGNAL_SIZE=32)))
    where = re.search(r'stopped by SIGUSR2 inside epoch (\d), after iteration (\d) of 4', line)
    assert where and LAST in line, line
    epoch, done = map(int, where.groups())
    assert (epoch, done) == (2, 2) if not workers else epoch == 1 and 1 <= done <= 3
    ckpt = torch.load(stopped / LAST, map_location='cpu', weights_only=False)
    assert ckpt['epoch'] == epoch - 1 and ckpt['position']['iteration'] == done
    assert not (stopped / 'summary.json').exists()
    metrics = stopped / 'run.metrics.jsonl'
    assert (len(metrics.read_text().splitlines()) if metrics.exists() else 0) == epoch - 1  # this epoch's: later
    resumed = ok(_train(stopped, *loader, '--resume'))
    assert f'inside epoch {epoch}, after iteration {done} of 4' in resumed.stdout
    _assert_same_training(tmp_path / 'straight', stopped)


def test_a_signal_to_one_rank_stops_both_after_the_same_step_and_the_resume_is_exact(tmp_path):
    """torchrun, 2 CPU ranks (Gloo), each reading 16 training samples an epoch in batches of 8: only rank 1 gets the
    signal (as its training sample 21 loads: epoch 2, iteration 1), rank 0 learns it in that step's agreement."""
    ok(_train(tmp_path / 'straight', nproc=2))
    stopped = tmp_path / 'stopped'
    result = _train(stopped, env=cli_env(TINY_SIGNAL_AT=21, TINY_SIGNAL_RANK=1, TINY_SIGNAL_SIZE=32), nproc=2)
    assert result.returncode != 0
    assert 'stopped by SIGUSR2 inside epoch 2, after iteration 1 of 2' in result.stderr, result.stderr[-3000:]
    ckpt = torch.load(stopped / LAST, map_location='cpu', weights_only=False)
    assert ckpt['position']['iteration'] == 1 and len(ckpt['rng']) == 2
    before = (stopped / LAST).read_bytes()
    alone = _train(stopped, '--resume')
    assert alone.returncode == 2 and 'saved inside epoch 2 (after iteration 1 of 2, 2 process(es)); it continues ' \
        'only with 2 process(es)' in alone.stderr, alone.stderr
    assert (stopped / LAST).read_bytes() == before
    ok(_train(stopped, '--resume', nproc=2))
    _assert_same_training(tmp_path / 'straight', stopped)


def test_a_signal_between_steps_of_validation_stops_at_the_next_epoch_start(tmp_path):
    """The signal comes during epoch 1's validation (its 10th sample): the run stops before epoch 2's first step,
    keeping epoch 1's checkpoint, and resumes like an epoch-end resume."""
    ok(_train(tmp_path / 'straight'))
    stopped = tmp_path / 'stopped'
    line = _stopped_line(_train(stopped, env=cli_env(TINY_SIGNAL_AT=1 + 10, TINY_SIGNAL_SIZE=16)))  # 1: pre-flight
    assert 'stopped by SIGUSR2 after epoch 1' in line and 'the last checkpoint is kept' in line, line
    assert 'position' not in torch.load(stopped / LAST, map_location='cpu', weights_only=False)
    ok(_train(stopped, '--resume'))
    _assert_same_training(tmp_path / 'straight', stopped)


def test_a_shipped_recipe_stopped_inside_an_epoch_with_loader_workers_resumes_bit_exactly(tmp_path, cifar100_env,
                                                                                          teacher_ckpts):
    """cifar100/wttm/resnet20_from_resnet56 on generated CIFAR-100 files, 2 loader workers through its real random
    crop and flip: SIGUSR2 at epoch 2's start (a pre-epoch probe) stops it after that epoch's first step; the resumed
    run replays that batch through fresh workers and ends with the uninterrupted run's weights, optimizer and
    generators."""
    args = ['train', 'cifar100/wttm/resnet20_from_resnet56', '--device', 'cpu', '--seed', '0',
            *[a for o in FAST for a in ('--set', o)], '--set', 'train.num_epochs=2',
            '--set', 'train.train_data_loader.kwargs.num_workers=2', '--no-test',
            '--set', f'models.teacher_model.src_ckpt={teacher_ckpts("resnet56")}',
            '--set', 'train.pre_epoch_process=probe_epoch',
            '--set', 'dependencies=[{name: ttm_torchdistill}, {name: epoch_probe}]']
    last = 'resource/ckpt/cifar100/wttm/cifar100-resnet20_from_resnet56.last.pt'
    for folder in ('straight', 'stopped'):
        (tmp_path / folder).mkdir()
    ok(run_cli(args, tmp_path / 'straight'))
    line = _stopped_line(run_cli(args, tmp_path / 'stopped', env=cli_env(PROBE_SIGNAL_AT_EPOCH=2)))
    assert 'stopped by SIGUSR2 inside epoch 2, after iteration 1 of 2' in line, line
    ok(run_cli([*args, '--resume'], tmp_path / 'stopped'))
    straight, resumed = (torch.load(tmp_path / f / last, map_location='cpu', weights_only=False)
                         for f in ('straight', 'stopped'))
    for key in SAME_IN_CHECKPOINTS:
        assert same_values(straight.get(key), resumed.get(key)), key
