"""`ttm-distill sweep` with the local launcher on the tiny recipe, and `table` on a sweep folder."""
import fcntl
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time

import pytest
import torch
from conftest import TINY, assert_same_state, ckpt_weights, cli, cli_env, ok

from ttm_torchdistill.cli import main
from ttm_torchdistill.sweep.results import sweep_table

LOSS = 'train.criterion.kwargs.sub_terms.wttm.criterion.kwargs'
GRID = ['--grid', 'gamma=0.5,0.8', '--grid', 'train.optimizer.kwargs.lr=0.1,0.01']


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob('*')) if p.is_file()}


@pytest.fixture(scope='module')
def grid_sweep(tmp_path_factory):
    """A finished 2 x 2 grid x 2 seeds sweep, run 2 at a time: (cwd, DIR, the command's arguments, its output)."""
    cwd = tmp_path_factory.mktemp('sweep')
    args = ['sweep', TINY, *GRID, '--seeds', '0', '1', '-o', 'out', '--parallel', '2']
    start = time.perf_counter()
    result = ok(cli(args, cwd))
    print(f'2 x 2 x 2 sweep: {time.perf_counter() - start:.1f} s')
    return cwd, cwd / 'out', args, result


def test_grid_sweep_runs_every_point_and_seed_without_the_test_pass(grid_sweep):
    cwd, out, _, result = grid_sweep
    manifest = json.loads((out / 'sweep.json').read_text())
    assert [a['key'] for a in manifest['grid']] == [f'{LOSS}.gamma', 'train.optimizer.kwargs.lr']
    assert [a['label'] for a in manifest['grid']] == ['gamma', 'lr']
    assert len(manifest['runs']) == 8 and manifest['seeds'] == [0, 1]
    summaries = sorted(out.glob('*/seed*/summary.json'))
    assert len(summaries) == 8
    for entry in manifest['runs']:
        run_dir = out / entry['dir']
        assert entry['state'] == 'finished' and entry['error'] is None
        assert entry['command'].startswith('ttm-distill train ') and '--no-test' in entry['command']
        assert f'--seed {entry["seed"]}' in entry['command']
        assert f'{LOSS}.gamma={entry["values"]["gamma"]}' in entry['command']
        summary = json.loads((run_dir / 'summary.json').read_text())
        assert summary['seed'] == entry['seed'] and entry['best_val_top1'] == summary['best_val_top1']
        assert summary['student_test_top1'] is None and summary['teacher_test_top1'] is None  # no test pass
        assert summary['best_ckpt'] == str(run_dir / 'student.pt') and (run_dir / 'student.last.pt').is_file()
        assert 'test  top-1 n/a' in (run_dir / 'run.log').read_text()
    assert not (cwd / 'ckpt').exists()  # the recipe's own checkpoint folder is never written
    progress = [line for line in result.stdout.splitlines() if line.startswith('[')]
    assert len(progress) == 8 and progress[-1].startswith('[8/8]') and all('eta' in p for p in progress)
    assert 'validates on its test set' in result.stderr  # tiny's val loader is its test loader


def test_table_ranks_points_by_mean_validation_top1(grid_sweep):
    cwd, out, _, result = grid_sweep
    by_point = {}
    for path in out.glob('*/seed*/summary.json'):
        by_point.setdefault(path.parent.parent.name, []).append(json.loads(path.read_text())['best_val_top1'])
    expected = {point: statistics.fmean(v) for point, v in by_point.items()}
    data = json.loads(sweep_table(out, 'json'))
    rows = data['rows']
    grid_order = list(dict.fromkeys(e['point'] for e in json.loads((out / 'sweep.json').read_text())['runs']))
    assert [r['point'] for r in rows] == sorted(grid_order, key=lambda p: -expected[p])  # ties keep the grid's order
    for row in rows:
        assert row['val_top1_mean'] == pytest.approx(expected[row['point']])
        assert row['val_top1_std'] == pytest.approx(statistics.stdev(by_point[row['point']]))
        assert (row['finished'], row['failed'], row['seeds']) == (2, 0, 2)
    best = data['best']
    assert best['point'] == rows[0]['point'] and [r['best'] for r in rows] == [True, False, False, False]
    assert best['command'] == (f'ttm-distill train {TINY} --set {LOSS}.gamma={best["values"]["gamma"]} '
                               f'--set train.optimizer.kwargs.lr={best["values"]["lr"]}')
    assert '--no-test' not in best['command'] and '--seed' not in best['command']
    markdown = sweep_table(out, 'markdown')
    assert best['command'] in markdown and markdown in result.stdout
    first = next(line for line in markdown.splitlines() if line.startswith('| *'))
    assert f'| {best["values"]["gamma"]} | {best["values"]["lr"]} | 2/2 | 0 |' in first
    csv_lines = sweep_table(out, 'csv').splitlines()
    assert csv_lines[0].startswith('best,gamma,lr,seeds,finished,failed,val_top1_mean') and len(csv_lines) == 5
    # the same through `ttm-distill table DIR`
    printed = ok(cli(['table', out, '--format', 'json'], cwd)).stdout
    assert [r['point'] for r in json.loads(printed)['rows']] == [r['point'] for r in rows]


def test_rerunning_a_finished_sweep_changes_no_run(grid_sweep):
    cwd, out, args, _ = grid_sweep
    runs = {p: _digest(p) for p in out.glob('*/seed*')}
    result = ok(cli(args, cwd))
    assert '[1/' not in result.stdout and '| * |' in result.stdout
    assert {p: _digest(p) for p in out.glob('*/seed*')} == runs


def test_tensorboard_gets_every_run_with_hparams(grid_sweep):
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, out, _, _ = grid_sweep
    run_dir = out / 'tensorboard' / 'gamma0.8_lr0.01' / 'seed1'
    events = EventAccumulator(str(run_dir))
    events.Reload()
    summary = json.loads((out / 'gamma0.8_lr0.01/seed1/summary.json').read_text())
    assert [e.value for e in events.Scalars('best_val_top1')] == [pytest.approx(summary['best_val_top1'])]
    assert [e.step for e in events.Scalars('val/top1')] == [1, 2]
    hparams = events.PluginTagToContent('hparams')
    assert hparams and any(b'gamma' in blob and b'seed' in blob for blob in hparams.values())
    assert len(list((out / 'tensorboard').glob('*/seed*'))) == 8


def test_a_cut_off_summary_is_not_a_finished_run_and_the_sweep_resumes_it(grid_sweep):
    cwd, out, args, _ = grid_sweep
    run_dir = out / 'gamma0.5_lr0.1' / 'seed0'
    summary = run_dir / 'summary.json'
    good = json.loads(summary.read_text())
    others = {p: _digest(p) for p in out.glob('*/seed*') if p != run_dir}
    summary.write_text(summary.read_text()[:40])  # cut off mid-write
    table = ok(cli(['table', out, '--format', 'json'], cwd))
    assert 'Traceback' not in table.stderr
    rows = {r['point']: r for r in json.loads(table.stdout)['rows']}
    assert (rows['gamma0.5_lr0.1']['finished'], rows['gamma0.5_lr0.1']['failed']) == (1, 0)  # seed1 only
    assert rows['gamma0.5_lr0.1']['val_top1_std'] == 0.0
    result = ok(cli(args, cwd))
    assert 'Traceback' not in result.stderr
    progress = [line for line in result.stdout.splitlines() if line.startswith('[')]
    assert progress == [line for line in progress if line.startswith('[8/8] gamma=0.5 lr=0.1 seed 0: best val')]
    assert len(progress) == 1
    assert json.loads(summary.read_text())['best_val_top1'] == good['best_val_top1']
    assert 'resumed from' in (run_dir / 'run.log').read_text()
    assert {p: _digest(p) for p in out.glob('*/seed*') if p != run_dir} == others
    states = [e['state'] for e in json.loads((out / 'sweep.json').read_text())['runs']]
    assert states == ['finished'] * 8


@pytest.mark.parametrize('launcher', [[], ['--launcher', 'slurm']])
def test_a_second_launcher_on_a_locked_sweep_folder_is_refused(grid_sweep, capsys, launcher):
    _, out, _, _ = grid_sweep
    before = _digest(out)
    with (out / '.sweep.lock').open('w') as held:  # as a running `ttm-distill sweep` holds it
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _refused(capsys, ['sweep', str(TINY), *GRID, '--seeds', '0', '1', '-o', str(out), *launcher],
                 [f'{out}: another `ttm-distill sweep` is running on this folder'])
    (out / '.sweep.lock').unlink()  # the stand-in launcher's own file
    assert _digest(out) == before


def _wait_for(predicate, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, 'timed out'
        time.sleep(0.02)


def test_ctrl_c_stops_the_sweep_and_the_same_command_resumes_it(tmp_path, monkeypatch):
    # a run is still training its second epoch for a while after its first checkpoint appears
    args = ['sweep', TINY, '--grid', 'gamma=0.5,0.8', '--seeds', '0', '--parallel', '1',
            '--set', 'train.num_epochs=2',  # 128 iterations, ~2 s an epoch on any machine (a per-sample delay)
            '--set', 'datasets.blobs/train.init.kwargs={size: 1024, seed: 0, delay: 0.002}', '-o', 'out']
    env = cli_env(OMP_NUM_THREADS=1)
    (tmp_path / 'a').mkdir(), (tmp_path / 'b').mkdir()
    out = tmp_path / 'a' / 'out'
    # Ctrl-C's default in the launcher, as in a terminal: a suite started in the background (`make test &`) hands its
    # processes an ignored SIGINT, which Python keeps ignoring
    proc = subprocess.Popen([sys.executable, '-m', 'ttm_torchdistill', *map(str, args)], cwd=tmp_path / 'a',
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first, second = out / 'gamma0.5/seed0', out / 'gamma0.8/seed0'
    _wait_for(lambda: (second / 'student.last.pt').is_file(), proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stdout + stderr
    lines = [line for line in stderr.splitlines() if line.strip() and 'validates on its test set' not in line]
    assert len(lines) == 1 and lines[0].startswith('ttm-distill: interrupted: 1 run(s) stopped, 1/2 done'), stderr
    states = {e['point']: e['state'] for e in json.loads((out / 'sweep.json').read_text())['runs']}
    assert states == {'gamma0.5': 'finished', 'gamma0.8': 'interrupted'}
    assert torch.load(second / 'student.last.pt', weights_only=False)['epoch'] < 2
    finished = _digest(first)
    monkeypatch.setenv('OMP_NUM_THREADS', '1')  # the runs' arithmetic as in the interrupted sweep
    resumed = ok(cli(args, tmp_path / 'a'))
    assert '[2/2] gamma=0.8 seed 0' in resumed.stdout and '[1/2]' not in resumed.stdout
    assert _digest(first) == finished  # the finished run was not run again
    assert 'resumed from' in (second / 'run.log').read_text()
    straight = tmp_path / 'b' / 'out'
    ok(cli(args, tmp_path / 'b'))
    for point in ('gamma0.5', 'gamma0.8'):
        last = f'{point}/seed0/student.last.pt'
        assert_same_state(ckpt_weights(out / last), ckpt_weights(straight / last))


def test_a_diverging_run_is_recorded_as_failed_and_the_others_finish(tmp_path):
    result = cli(['sweep', TINY, '--grid', 'datasets.blobs/train.init.kwargs.nan_from=null,0', '--seeds', '0',
                      '-o', 'out'], tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    runs = {e['point']: e for e in json.loads((tmp_path / 'out/sweep.json').read_text())['runs']}
    assert runs['nan_fromnull']['state'] == 'finished'
    failed = runs['nan_from0']
    assert failed['state'] == 'failed' and 'non-finite loss' in failed['error'] and 'exit code 1' in failed['error']
    data = json.loads(sweep_table(tmp_path / 'out', 'json'))
    assert [(r['point'], r['finished'], r['failed']) for r in data['rows']] == [('nan_fromnull', 1, 0),
                                                                              ('nan_from0', 0, 1)]
    assert data['rows'][1]['val_top1_mean'] is None and 'non-finite loss' in data['rows'][1]['errors'][0]
    assert 'failed nan_from0/seed0: exit code 1: ttm-distill: error: non-finite loss' in result.stdout


def _ambiguous_recipe(tmp_path):
    text = TINY.read_text()
    kd = ("        kd:\n          criterion:\n            key: 'KDLoss'\n            kwargs:\n"
          "              student_module_path: '.'\n              student_module_io: 'output'\n"
          "              teacher_module_path: '.'\n              teacher_module_io: 'output'\n"
          "              temperature: 4.0\n              alpha: 0.5\n          weight: 1.0\n")
    path = tmp_path / 'two_terms.yaml'
    path.write_text(text.replace('\ntest:\n', kd + '\ntest:\n'))
    return path


@pytest.mark.parametrize('grid, fragments', [
    ([], ['no --grid given']),
    (['--grid', 'gamma'], ["--grid 'gamma': expected NAME=V1,V2"]),
    (['--grid', 'gamma='], ['empty value']),
    (['--grid', 'gamma=0.5,,0.8'], ['empty value']),
    (['--grid', 'gamma=[1'], ["'[1' is not valid YAML"]),
    (['--grid', 'gamma=0.5,0.5'], ['repeated']),
    (['--grid', 'gamma=-1'], ['--grid gamma=-1: WTTMLoss', 'gamma=-1 is invalid', 'accepted range']),
    (['--grid', 'temperature=2'], ["does not set 'temperature'", 'it sets: gamma, beta, alpha']),
    (['--grid', 'train.num_epoch=1,2'], ["--grid train.num_epoch: ", "no key 'num_epoch' under train"]),
    (['--grid', 'gamma=0.5', '--grid', f'{LOSS}.gamma=0.8'], ['resolve to the same key']),
    (['--grid', 'gamma=0.5', '--slurm', 'partition=x'], ['need --launcher slurm']),
    (['--grid', 'gamma=0.5', '--parallel', '0'], ['--parallel 0']),
])
def test_bad_grid_gives_one_line_exit_2_and_creates_nothing(tmp_path, capsys, grid, fragments):
    _refused(capsys, ['sweep', str(TINY), *grid, '-o', str(tmp_path / 'out')], fragments)
    assert not (tmp_path / 'out').exists()


def _refused(capsys, args, fragments):
    capsys.readouterr()
    assert main(args) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith('ttm-distill: error: '), captured.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_short_names_need_exactly_one_distillation_term(tmp_path, capsys):
    _refused(capsys, ['sweep', 'demo/ce', '--grid', 'beta=1,2', '-o', str(tmp_path / 'a')],
             ['has no TTMLoss, WTTMLoss, KDLoss, ExactDISTLoss, DKDLoss, HintLoss, ExactATLoss, ExactVIDLoss, '
              'RKDLoss or PKTLoss term', 'give the full key'])
    _refused(capsys, ['sweep', str(_ambiguous_recipe(tmp_path)), '--grid', 'alpha=1,2', '-o', str(tmp_path / 'b')],
             ['several loss terms', 'wttm (WTTMLoss), kd (KDLoss)', 'sub_terms.wttm.criterion.kwargs.alpha'])
    _refused(capsys, ['sweep', 'no/such/recipe', '--grid', 'gamma=1', '-o', str(tmp_path / 'c')],
             ['recipe not found'])
    assert not any((tmp_path / d).exists() for d in 'abc')


def test_a_folder_with_another_sweep_or_foreign_files_is_refused_untouched(tmp_path, capsys, grid_sweep):
    _, out, _, _ = grid_sweep
    before = _digest(out)
    _refused(capsys, ['sweep', str(TINY), '--grid', 'gamma=0.5,0.9', '--grid', 'train.optimizer.kwargs.momentum=0.9',
                      '--seeds', '0', '1', '-o', str(out)], [f'-o {out} holds another sweep (different --grid names)'])
    _refused(capsys, ['sweep', str(TINY), *GRID, '--seeds', '0', '--set', 'train.num_epochs=2', '-o', str(out)],
             ['different --set overrides'])
    assert _digest(out) == before
    foreign = tmp_path / 'mine'
    foreign.mkdir()
    (foreign / 'notes.txt').write_text('keep me\n')
    _refused(capsys, ['sweep', str(TINY), '--grid', 'gamma=0.5', '-o', str(foreign)], ['holds files but no sweep.json'])
    assert [p.name for p in foreign.iterdir()] == ['notes.txt']


def test_dry_run_lists_the_runs_and_changes_nothing(tmp_path, capsys):
    assert main(['sweep', str(TINY), *GRID, '--seeds', '3', '-o', str(tmp_path / 'out'), '--dry-run']) == 0
    out = capsys.readouterr().out
    runs = [line for line in out.splitlines() if '/seed3 ' in line]
    assert len(runs) == 4 and all('pending' in r and '--seed 3' in r and '--no-test' in r for r in runs)
    assert 'local launcher: 1 run(s) at a time on CPU' in out
    assert not (tmp_path / 'out').exists()
    assert os.listdir(tmp_path) == []
