"""`ttm-distill`: training, resume, distributed CPU runs, summaries and error handling."""
import hashlib
import json

import pytest
import torch
from conftest import (
    RECIPES,
    TINY,
    assert_same_state,
    ckpt_weights,
    cli,
    cli_env,
    ok,
    one_error_line,
    run_cli,
    straight_and_resumed,
)
from torchdistill.common.main_util import load_ckpt

from ttm_torchdistill.runner.checkpoint import last_ckpt_path
from ttm_torchdistill.runner.evaluate import ShardSampler

BEST = 'ckpt/tiny/wttm/student.pt'


def test_train_writes_summary_metrics_and_checkpoints(tmp_path):
    result = ok(cli(['train', TINY, '--device', 'cpu', '--seed', '0', '--summary', 'out/summary.json',
                          '--run-log', 'out/run.log'], tmp_path))
    summary = json.loads((tmp_path / 'out/summary.json').read_text())
    for key in ('recipe', 'world_size', 'device', 'epochs_run', 'best_val_top1', 'teacher_test_top1',
                'teacher_test_top5', 'student_test_top1', 'student_test_top5', 'train_images_per_s', 'wall_s',
                'best_ckpt', 'last_ckpt'):
        assert key in summary, key
    assert summary['world_size'] == 1 and summary['device'] == 'cpu' and summary['epochs_run'] == 2
    assert summary['train_images_per_s'] > 0
    records = [json.loads(line) for line in (tmp_path / 'out/run.metrics.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in records] == [1, 2]
    assert summary['best_val_top1'] == max(r['val_top1'] for r in records)
    for r in records:
        for key in ('train_loss', 'lr', 'val_top1', 'val_top5', 'train_images_per_s', 'cross_entropy',
                    'distill', 'u_gamma', 'student_entropy', 'divergence'):
            assert isinstance(r[key], float), key
        assert 1.0 <= r['u_gamma'] <= 4 ** 0.2 + 1e-6  # U_gamma bounds for K = 4, gamma = 0.8
    assert records[0]['lr'] == 0.1 and records[1]['lr'] == pytest.approx(0.01)
    log = (tmp_path / 'out/run.log').read_text()
    assert 'eta' in log and 'img/s' in log and 'val top-1' in log and 'student test  top-1' in log
    assert 'eta' in result.stdout
    # the best checkpoint loads with torchdistill's own load_ckpt
    from tiny import tiny_cnn
    model = tiny_cnn(num_classes=4)
    best_value, _ = load_ckpt(str(tmp_path / BEST), model=model, strict=True)
    assert best_value == summary['best_val_top1']
    assert_same_state(model.state_dict(), ckpt_weights(tmp_path / BEST))
    # `test` re-evaluates the best checkpoint and gives the same numbers
    # the tiny teacher is randomly initialised: the same seed rebuilds the same teacher
    ok(cli(['test', TINY, '--device', 'cpu', '--seed', '0', '--summary', 'test.json'], tmp_path))
    tested = json.loads((tmp_path / 'test.json').read_text())
    assert tested['student_test_top1'] == summary['student_test_top1']
    assert tested['teacher_test_top1'] == summary['teacher_test_top1']
    assert tested['best_val_top1'] == summary['best_val_top1']  # read from the best checkpoint


def test_kill_after_first_epoch_then_resume_matches_uninterrupted_run(tmp_path):
    args = ['train', TINY, '--device', 'cpu', '--seed', '3', '--set', 'train.num_epochs=3']

    def train(stage, folder):
        if stage != 'interrupted':
            return ok(cli(args + (['--resume'] if stage == 'resumed' else []), folder))
        # Blobs SIGKILLs its own process at the first training sample of epoch 2 (2 reads of the runner's pre-flight
        # step, then 32 samples per epoch)
        result = run_cli(args, folder, env=cli_env(TINY_KILL_AT=35))
        assert result.returncode == -9, result.stderr[-2000:]
        ckpt = torch.load(folder / last_ckpt_path(BEST), map_location='cpu', weights_only=False)
        assert ckpt['epoch'] == 1
        assert not list((folder / 'ckpt/tiny/wttm').glob('*.tmp'))
        refused = cli(args, folder)
        one_error_line(refused, 2, 'pass --resume')
        return result

    runs = straight_and_resumed(tmp_path, train, folders=('straight', 'killed'))
    straight, killed = runs.straight, runs.resumed
    assert_same_state(ckpt_weights(straight / last_ckpt_path(BEST)), ckpt_weights(killed / last_ckpt_path(BEST)))
    assert_same_state(ckpt_weights(straight / BEST), ckpt_weights(killed / BEST))
    epochs = [json.loads(line)['epoch'] for line in (killed / 'ckpt/tiny/wttm/student.metrics.jsonl').open()]
    assert epochs == [1, 2, 3]


def test_nan_loss_stops_with_exit_1_and_keeps_the_last_checkpoint(tmp_path):
    ok(cli(['train', TINY, '--device', 'cpu', '--set', 'train.num_epochs=1'], tmp_path))
    last = tmp_path / last_ckpt_path(BEST)
    before = hashlib.sha256(last.read_bytes()).hexdigest()
    best_before = hashlib.sha256((tmp_path / BEST).read_bytes()).hexdigest()
    result = cli(['train', TINY, '--device', 'cpu', '--resume', '--allow-recipe-change',
                      '--set', 'train.num_epochs=2',
                      '--set', 'train.train_data_loader.sampler.class_or_func=!import_get {key: '
                      'torch.utils.data.SequentialSampler}',
                      '--set', 'datasets.blobs/train.init.kwargs.nan_from=8'], tmp_path)
    one_error_line(result, 1, 'non-finite loss', 'epoch 2, iteration 2', 'last good checkpoint')
    assert hashlib.sha256(last.read_bytes()).hexdigest() == before
    assert hashlib.sha256((tmp_path / BEST).read_bytes()).hexdigest() == best_before


def test_a_non_finite_loss_on_one_rank_stops_every_rank_at_the_same_iteration(tmp_path):
    # DistributedSampler(shuffle=False), 4 per rank: sample 9 is rank 1's second batch, rank 0 never sees it
    result = run_cli(['train', TINY, '--device', 'cpu', '--set', 'train.train_data_loader.kwargs.batch_size=4',
                      '--set', 'train.train_data_loader.sampler.kwargs={shuffle: false}',
                      '--set', 'datasets.blobs/train.init.kwargs.nan_at=[9]'], tmp_path, torchrun_nproc=2)
    assert result.returncode != 0
    assert result.stderr.count('ttm-distill: error: non-finite loss (nan) at epoch 1, iteration 2') == 2, \
        result.stderr[-3000:]
    assert not (tmp_path / last_ckpt_path(BEST)).exists() and not (tmp_path / BEST).exists()


def test_two_cpu_processes_average_gradients_like_one_process(tmp_path):
    one, two = tmp_path / 'one', tmp_path / 'two'
    one.mkdir(), two.mkdir()
    common = ['--device', 'cpu', '--seed', '5', '--set', 'train.post_epoch_process=save_student_per_rank',
              '--set', 'train.scheduler.kwargs.milestones=[10]']
    sequential = '!import_get {key: torch.utils.data.SequentialSampler}'
    ok(run_cli(['train', TINY, *common, '--set', f'train.train_data_loader.sampler.class_or_func={sequential}',
                 '--set', 'train.train_data_loader.kwargs.batch_size=8', '--summary', 's.json'], one,
                env=cli_env(TINY_RANK_DIR=one / 'ranks')))
    # 2 ranks x 4 = the same global batch of 8; DistributedSampler(shuffle=False) gives rank r samples r, r+2, ...
    result = ok(run_cli(['train', TINY, *common, '--set', 'train.train_data_loader.sampler.kwargs={shuffle: false}',
                          '--set', 'train.train_data_loader.kwargs.batch_size=4', '--summary', 's.json'], two,
                         env=cli_env(TINY_RANK_DIR=two / 'ranks'), torchrun_nproc=2))
    rank0 = torch.load(two / 'ranks/rank0.pt')
    rank1 = torch.load(two / 'ranks/rank1.pt')
    assert_same_state(rank0, rank1)  # bit-identical replicas: gradients really were all-reduced
    single = torch.load(one / 'ranks/rank0.pt')
    for key in single:
        torch.testing.assert_close(rank0[key], single[key], rtol=1e-5, atol=1e-6)
    summary = json.loads((two / 's.json').read_text())
    assert summary['world_size'] == 2
    one_summary = json.loads((one / 's.json').read_text())
    # validation and test accuracy cover the whole split once, summed over both ranks
    assert summary['student_test_top1'] == pytest.approx(one_summary['student_test_top1'], abs=1e-9)
    assert summary['teacher_test_top1'] == pytest.approx(one_summary['teacher_test_top1'], abs=1e-9)
    assert 'Traceback' not in result.stderr


def test_shard_sampler_covers_every_sample_once():
    data = list(range(10))
    shards = [list(ShardSampler(data, r, 3)) for r in range(3)]
    assert sorted(sum(shards, [])) == data
    assert [len(ShardSampler(data, r, 3)) for r in range(3)] == [4, 3, 3]


def test_recipes_command_lists_shipped_recipes(tmp_path):
    out = ok(cli(['recipes'], tmp_path)).stdout.split()
    shipped = sorted(p.relative_to(RECIPES).with_suffix('').as_posix() for p in RECIPES.rglob('*.yaml'))
    assert out == shipped and 'ilsvrc2012/wttm/resnet18_from_resnet34' in out


@pytest.mark.parametrize('args, fragments', [
    (['train', 'no/such/recipe'], ['recipe not found', 'no/such/recipe']),
    (['train', TINY, '--set', 'train.num_epochs'], ['expected KEY=VALUE']),
    (['train', TINY, '--set', '=3'], ['expected KEY=VALUE']),
    (['train', TINY, '--set', 'train.num_epoch=3'], ["no key 'num_epoch' under train"]),
    (['train', TINY, '--set', 'train.num_epochs=[1'], ['VALUE is not valid YAML']),
    (['train', TINY, '--set', 'train.criterion.kwargs.sub_terms.wttm.criterion.key=WTTMLos'],
     ['WTTMLos']),
    (['train', TINY, '--set', 'models.student_model.key=no_such_net'], ["unknown model 'no_such_net'"]),
    (['train', TINY, '--set', 'train.criterion.kwargs.sub_terms.wttm.criterion.kwargs.gamma=-1'],
     ['gamma=-1 is invalid', 'accepted range']),
    (['train', TINY, '--resume'], ['--resume: no checkpoint']),
    (['test', TINY], ['no best checkpoint']),
])
def test_bad_input_gives_one_line_and_exit_2(tmp_path, args, fragments):
    one_error_line(cli(args, tmp_path), 2, *fragments)


def test_malformed_yaml_and_missing_dataset(tmp_path, monkeypatch):
    bad = tmp_path / 'bad.yaml'
    bad.write_text('datasets: [unclosed\n')
    one_error_line(cli(['train', bad], tmp_path), 2, 'malformed YAML', str(bad))
    missing = tmp_path / 'nowhere'
    monkeypatch.setenv('ILSVRC2012_ROOT', str(missing))
    result = cli(['train', 'ilsvrc2012/wttm/resnet18_from_resnet34', '--device', 'cpu'], tmp_path)
    one_error_line(result, 2, 'missing file or directory', str(missing / 'train'))


def test_debug_shows_the_traceback(tmp_path):
    result = cli(['train', TINY, '--set', 'models.student_model.key=no_such_net', '--debug'], tmp_path)
    assert result.returncode != 0 and 'Traceback' in result.stderr


@pytest.mark.parametrize('flags', [['--amp', 'bf16', '--channels-last'], ['--amp', 'fp16']])
def test_mixed_precision_and_channels_last_train(tmp_path, flags):
    result = ok(cli(['train', TINY, '--device', 'cpu', '--seed', '0', '--summary', 's.json', *flags], tmp_path))
    summary = json.loads((tmp_path / 's.json').read_text())
    assert summary['amp'] == flags[1] and summary['channels_last'] == ('--channels-last' in flags)
    assert summary['epochs_run'] == 2 and summary['student_test_top1'] is not None
    ckpt = torch.load(tmp_path / last_ckpt_path(BEST), weights_only=False)
    assert (ckpt['scaler'] is not None) == (flags[1] == 'fp16')
    assert all(torch.isfinite(v).all() for v in ckpt['model'].values() if v.is_floating_point())
    assert 'non-finite' not in result.stderr
