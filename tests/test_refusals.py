"""Refused commands leave nothing behind (no lock file, no empty folder), outputs never share a path, and each message
points the right way: the loss a --grid name belongs to, timm when timm was asked for, timm's weights offline."""
import json
import socket

import pytest
from conftest import FAST, TINY, cli, cli_env, one_error_line, run_cli

CKPT = 'ckpt/tiny/wttm/student.pt'


def test_a_refused_resume_leaves_no_lock_and_no_folder(tmp_path):
    one_error_line(cli(['train', TINY, '--device', 'cpu', '--resume'], tmp_path), 2, 'no checkpoint to resume from')
    assert list(tmp_path.iterdir()) == []


def test_a_run_refused_after_building_leaves_no_lock_and_no_folder(tmp_path):
    args = ['train', TINY, '--device', 'cpu', '--set',
            'train.train_data_loader.kwargs={batch_size: 64, num_workers: 0, drop_last: True}']
    one_error_line(cli(args, tmp_path), 2, 'an epoch has 0 iterations')
    assert list(tmp_path.iterdir()) == []


def test_a_finished_run_removes_its_lock_and_a_refused_new_run_keeps_the_earlier_files(tmp_path):
    assert cli(['train', TINY, '--device', 'cpu', '--set', 'train.num_epochs=1'], tmp_path).returncode == 0
    folder = tmp_path / 'ckpt/tiny/wttm'
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert 'student.pt.lock' not in files and 'student.last.pt' in files
    one_error_line(cli(['train', TINY, '--device', 'cpu'], tmp_path), 2, 'exists from an earlier run')
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == files


@pytest.mark.parametrize('flags, fragment', [
    (['--summary', CKPT], f"--summary='{CKPT}' is also models.student_model.dst_ckpt (the best checkpoint)"),
    (['--summary', 'ckpt/tiny/wttm/student.last.pt'], 'is also the last checkpoint'),
    (['--run-log', 'r.log', '--summary', 'r.log'], "--summary='r.log' is also --run-log"),
    (['--run-log', 'r.log', '--summary', 'r.metrics.jsonl'], 'is also the metrics file'),
    (['--tensorboard', 'ckpt/tiny/wttm/student.pt.lock'], 'is also the run lock'),
])
def test_two_outputs_on_one_path_are_refused_before_anything_is_written(tmp_path, flags, fragment):
    if '--tensorboard' in flags:
        pytest.importorskip('torch.utils.tensorboard')
    one_error_line(cli(['train', TINY, '--device', 'cpu', *flags], tmp_path), 2, fragment, 'its own path')
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('flag, value, fragment', [
    ('--gamma', '0', '--gamma 0: expected a finite number > 0'),
    ('--gamma', 'nan', '--gamma nan: expected a finite number > 0'),
    ('--beta', '-1', '--beta -1: expected a finite number >= 0'),
    ('--beta', 'inf', '--beta inf: expected a finite number >= 0'),
])
def test_new_recipe_out_of_range_values_are_one_line(tmp_path, flag, value, fragment):
    args = ['new-recipe', '--from', 'ilsvrc2012/wttm/resnet18_from_resnet34', '--teacher', 'resnet50', '--student',
            'resnet18', '--method', 'wttm', flag, value, '-o', 'x.yaml']
    one_error_line(cli(args, tmp_path), 2, fragment)
    assert list(tmp_path.iterdir()) == []


def test_new_recipe_timm_name_that_timm_lacks_mentions_timm_only(tmp_path):
    pytest.importorskip('timm')
    args = ['new-recipe', '--from', 'ilsvrc2012/wttm/resnet18_from_resnet34', '--teacher', 'resnet50', '--student',
            'timm/resnet18x', '--method', 'wttm', '-o', 'x.yaml']
    line = one_error_line(cli(args, tmp_path), 2, "--student timm/resnet18x: 'resnet18x' is not a timm model",
                          'did you mean resnet18')
    assert 'torchvision' not in line


@pytest.mark.parametrize('name, fragment', [
    ('beta_corr', 'has no ITRDLoss term'), ('alpha_it', 'has no ITRDLoss term'),
    ('temperature', "the WTTMLoss term 'wttm' does not set 'temperature'"),
])
def test_grid_short_names_name_the_loss_they_belong_to(tmp_path, name, fragment):
    line = one_error_line(cli(['sweep', 'cifar100/wttm/resnet8x4_from_resnet32x4', '--grid', f'{name}=1,2', '-o',
                               'out'], tmp_path), 2, f'--grid {name}: ', fragment)
    assert 'add it to that term' in line or 'parameter of ITRDLoss' in line
    assert list(tmp_path.iterdir()) == []


def test_runs_per_gpu_without_a_gpu_says_so(tmp_path, capsys):
    from ttm_torchdistill.sweep import local

    launcher = local.LocalLauncher(object(), None, 1)
    if launcher.gpus:
        pytest.skip('a GPU is visible')
    assert launcher.note == ('note: --runs-per-gpu 1 has no effect: no GPU is visible, so runs share the CPU, 1 at a '
                             'time (--parallel)')
    assert local.LocalLauncher(object(), None, None).note is None  # not given: nothing to say


def test_table_of_a_folder_with_a_foreign_sweep_json_shows_the_rest(tmp_path):
    runs = tmp_path / 'runs'
    for seed in (0, 1):
        summary = {'kind': 'train', 'recipe': 'cifar100/wttm/resnet8x4_from_resnet32x4', 'best_val_top1': 70.0 + seed,
                   'student_test_top1': 69.0, 'teacher_test_top1': 79.0, 'overrides': [], 'paper_top1': 76.06}
        (runs / f'seed{seed}').mkdir(parents=True)
        (runs / f'seed{seed}/summary.json').write_text(json.dumps(summary))
    (runs / 'sweep.json').write_text('{"not": "a sweep"}')
    (runs / 'other').mkdir()
    (runs / 'other/sweep.json').write_text('[1]')
    result = cli(['table', 'runs'], tmp_path)
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(notes) == 2 and all('sweep.json' in n and 'skipped' in n for n in notes), notes
    assert '| cifar100/wttm/resnet8x4_from_resnet32x4 |  | 2 | 70.50 +- 0.71 |' in result.stdout


def test_plot_of_a_folder_of_several_runs_draws_each(tmp_path):
    pytest.importorskip('matplotlib')
    for seed in (0, 1, 2):
        folder = tmp_path / 'runs' / f'seed{seed}'
        folder.mkdir(parents=True)
        lines = [json.dumps({'epoch': e, 'train_loss': 1.0 / e, 'lr': 0.1, 'val_top1': 50.0 + e + seed,
                             'recipe': 'cifar100/wttm/resnet8x4_from_resnet32x4'}) for e in (1, 2)]
        (folder / 'run.metrics.jsonl').write_text('\n'.join(lines) + '\n')
    (tmp_path / 'runs/seed3').mkdir()
    (tmp_path / 'runs/seed3/run.metrics.jsonl').write_text('')  # started, no epoch yet
    result = cli(['plot', 'runs', '-o', 'all.png'], tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / 'all.png').stat().st_size > 0
    notes = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(notes) == 1 and 'seed3/run.metrics.jsonl: no epoch has finished' in notes[0]


def test_a_missing_timm_teacher_offline_is_one_line_at_once(tmp_path, image_root):
    """No weights file and an empty Hub cache, on a machine that cannot reach the Hub: one line naming both ways the
    docs give, before any retry (huggingface_hub's retries take a minute and print pages)."""
    pytest.importorskip('timm')
    env = cli_env(ILSVRC2012_ROOT=image_root, HF_HOME=tmp_path / 'hf', HF_HUB_DISABLE_TELEMETRY=1)
    env.pop('HTTPS_PROXY', None), env.pop('https_proxy', None)
    sets = [a for o in ['datasets.ilsvrc2012/train.init.kwargs.transform.init.kwargs.input_size=32', *FAST]
            for a in ('--set', o)]
    for offline in ('1', None):
        if offline:
            env['HF_HUB_OFFLINE'] = offline
        else:
            env.pop('HF_HUB_OFFLINE', None)
            if _hub_reachable():
                continue  # this machine reaches the Hub: timm would download
        result = run_cli(['train', 'ilsvrc2012/kd/deit_tiny_from_deit3_small', '--device', 'cpu', '--check', *sets],
                         tmp_path, env=env, timeout=120)
        line = one_error_line(result, 2, "cannot get timm's pretrained weights", 'kwargs.checkpoint',
                              'models--timm--deit3_small_patch16_224.fb_in22k_ft_in1k', 'HF_HUB_OFFLINE=1')
        assert ('HF_HUB_OFFLINE is set' if offline else 'cannot be reached') in line
        assert not (tmp_path / 'resource').exists()


def _hub_reachable() -> bool:
    try:
        socket.create_connection(('huggingface.co', 443), timeout=5).close()
    except OSError:
        return False
    return True


@pytest.mark.parametrize('sets, command, fragment', [
    (['train.val_data_loader=null'], ['train'], 'train.val_data_loader is required'),
    (['test.test_data_loader=null'], ['train'], 'test.test_data_loader is required'),
    (['test.test_data_loader=null'], ['test'], 'test.test_data_loader is required'),
    (['models.student_model.dst_ckpt=null'], ['train'], 'models.student_model.dst_ckpt is required'),
    (['train={}'], ['train', '--check'], "missing or empty top-level key 'train'"),
    (['datasets={}'], ['test'], "missing or empty top-level key 'datasets'"),
    (['train.train_data_loader=null'], ['train'], 'train.train_data_loader is required'),
])
def test_required_keys_are_rules_checked_before_anything_is_built(tmp_path, sets, command, fragment):
    args = [command[0], TINY, *command[1:], '--device', 'cpu', *(a for s in sets for a in ('--set', s))]
    one_error_line(cli(args, tmp_path), 2, f'{TINY}: {fragment}')
    assert list(tmp_path.iterdir()) == []


def test_a_run_without_its_test_pass_needs_no_test_loader(tmp_path):
    args = ['train', TINY, '--device', 'cpu', '--no-test', '--set', 'test.test_data_loader=null', '--set',
            'train.num_epochs=1']
    assert cli(args, tmp_path).returncode == 0
