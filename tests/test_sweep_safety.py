"""Sweeps keep every run's files, grow, fail once for recipe-wide errors, show progress and die with their launcher."""
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TINY, cli, cli_env, ok, run_cli
from test_sweep import _digest, _refused

from ttm_torchdistill.cli import main
from ttm_torchdistill.sweep import local

SLOW = ['--set', 'train.num_epochs=3', '--set', 'datasets.blobs/train.init.kwargs={size: 2048, seed: 0, delay: 0.001}']
"""256 iterations (about 2 s) per epoch: a run is still training for a while after its first checkpoint appears"""


def _states(out: Path) -> dict:
    return {f'{e["point"]}/seed{e["seed"]}': e['state'] for e in json.loads((out / 'sweep.json').read_text())['runs']}


def _wait(condition, timeout=120.0, proc=None):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, 'timed out'
        assert proc is None or proc.poll() is None, proc.communicate()
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by its new parent) counts as gone
        return Path(f'/proc/{pid}/stat').read_text().split(')')[-1].split()[0] != 'Z'
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f'/proc/{pid}/task').iterdir():
        found += [int(c) for c in (task / 'children').read_text().split()]
    return found


def test_more_seeds_and_grid_values_grow_the_sweep_and_run_only_the_new_runs(tmp_path):
    ok(cli(['sweep', TINY, '--grid', 'gamma=0.5', '--seeds', '0', '-o', 'out'], tmp_path))
    out = tmp_path / 'out'
    first = _digest(out / 'gamma0.5' / 'seed0')
    grown = ok(cli(['sweep', TINY, '--grid', 'gamma=0.5,0.8', '--seeds', '0', '1', '-o', 'out'], tmp_path))
    assert 'the sweep grows from 1 to 4 runs' in grown.stdout and '3 of 4 run(s) to do' in grown.stdout
    assert _digest(out / 'gamma0.5' / 'seed0') == first  # the finished run was neither run again nor touched
    manifest = json.loads((out / 'sweep.json').read_text())
    assert manifest['seeds'] == [0, 1] and manifest['grid'][0]['values'] == ['0.5', '0.8']
    assert set(_states(out).values()) == {'finished'} and len(_states(out)) == 4
    again = ok(cli(['sweep', TINY, '--grid', 'gamma=0.5', '--seeds', '0', '-o', 'out'], tmp_path))
    assert 'to do' not in again.stdout and len(_states(out)) == 4  # a smaller command keeps the larger sweep


@pytest.mark.parametrize('args', [['--set', 'models.student_model.dst_ckpt=mine.pt'],
                                  ['--grid', 'models.student_model.dst_ckpt=a.pt,b.pt']])
def test_output_paths_cannot_be_set_in_a_sweep(tmp_path, capsys, args):
    grid = [] if args[0] == '--grid' else ['--grid', 'gamma=0.5']
    _refused(capsys, ['sweep', str(TINY), *grid, *args, '-o', str(tmp_path / 'out')],
             ['dst_ckpt', 'a sweep puts each run', 'DIR/<point>/seed<k>/'])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize('dry_run', [[], ['--dry-run']])
def test_a_missing_plugin_is_one_line_before_any_run(tmp_path, dry_run):
    result = cli(['sweep', TINY, '--grid', 'gamma=0.5,0.8', '--seeds', '0', '1', '-o', 'out',
                      '--set', 'dependencies=[{name: tiny}, {name: no_such_plugin}]', *dry_run], tmp_path)
    errors = [line for line in result.stderr.splitlines() if line.startswith('ttm-distill')]
    assert result.returncode == 2 and len(errors) == 1 and 'no_such_plugin' in errors[0], result.stderr
    assert 'Traceback' not in result.stderr and not (tmp_path / 'out').exists()


def test_a_wrong_data_root_of_a_shipped_recipe_is_one_line_before_any_run(tmp_path):
    env = cli_env(CIFAR100_ROOT=tmp_path / 'nowhere')
    result = run_cli(['sweep', 'cifar100/ce/resnet8x4', '--grid', 'train.optimizer.kwargs.lr=0.1,0.05', '-o', 'out'],
                     tmp_path, env=env)
    errors = [line for line in result.stderr.splitlines() if line.startswith('ttm-distill')]
    assert result.returncode == 2 and len(errors) == 1, result.stderr
    assert str(tmp_path / 'nowhere') in errors[0] and 'docs/recipes/cifar100.md' in errors[0]
    assert not (tmp_path / 'out').exists()


def test_progress_lines_name_each_running_run_its_epochs_and_its_log(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(local, 'PROGRESS_S', 0.5)
    monkeypatch.setenv('PYTHONPATH', cli_env()['PYTHONPATH'])
    monkeypatch.chdir(tmp_path)
    assert main(['sweep', str(TINY), '--grid', 'gamma=0.5', '--seeds', '0', *SLOW, '-o', 'out']) == 0
    out = capsys.readouterr().out
    log = tmp_path / 'out' / 'gamma0.5' / 'seed0' / 'run.log'
    assert f'started gamma=0.5 seed 0: log {log}' in out
    running = [line for line in out.splitlines() if line.startswith('  running gamma=0.5 seed 0: epoch ')]
    assert running and all(f'log {log}' in line and 'eta' in line for line in running)
    assert any('/3 done' in line for line in running)


def test_a_failed_attempt_is_set_aside_not_replaced(tmp_path):
    args = ['sweep', TINY, '--grid', 'datasets.blobs/train.init.kwargs.nan_from=0', '--seeds', '0', '-o', 'out']
    assert cli(args, tmp_path).returncode == 1
    run = tmp_path / 'out' / 'nan_from0' / 'seed0'
    first = _digest(run)
    assert cli(args, tmp_path).returncode == 1
    kept = run / 'attempts' / '1'
    assert {'run.log', 'error.txt'} <= {p.name for p in kept.iterdir()}
    kept_digest = _digest(kept)
    assert all(kept_digest[name] == first[name] for name in ('run.log', 'error.txt'))


def _start_slow_sweep(cwd: Path, background: bool) -> tuple[subprocess.Popen, int]:
    """A sweep of one slow run; with ``background``, started as `cmd &` by a non-interactive shell (so SIGINT is
    ignored in it, as for any background job). Returns (the process to wait for, the launcher's pid)."""
    args = ['sweep', str(TINY), '--grid', 'gamma=0.5', '--seeds', '0', *SLOW, '-o', 'out']
    command = [sys.executable, '-m', 'ttm_torchdistill', *args]
    env = cli_env(OMP_NUM_THREADS=1)
    if not background:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return proc, proc.pid
    script = shlex.join(map(str, command)) + ' > sweep.out 2> sweep.err & echo $! > sweep.pid; wait $!; echo $? > rc'
    proc = subprocess.Popen(['bash', '-c', script], cwd=cwd, env=env)
    _wait(lambda: (cwd / 'sweep.pid').is_file() and (cwd / 'sweep.pid').read_text().strip())
    return proc, int((cwd / 'sweep.pid').read_text())


def test_killing_the_launcher_stops_its_runs_and_the_same_command_resumes_them(tmp_path):
    proc, pid = _start_slow_sweep(tmp_path, background=False)
    run = tmp_path / 'out' / 'gamma0.5' / 'seed0'
    _wait(lambda: (run / 'student.last.pt').is_file(), proc=proc)
    children = _children(pid)
    assert children
    proc.kill()
    proc.wait()
    _wait(lambda: not any(_alive(c) for c in children), timeout=30)  # no orphan keeps training
    resumed = ok(run_cli(['sweep', TINY, '--grid', 'gamma=0.5', '--seeds', '0', *SLOW, '-o', 'out'], tmp_path,
                          env=cli_env(OMP_NUM_THREADS=1)))
    assert '1 of 1 run(s) to do' in resumed.stdout and 'resumed from' in (run / 'run.log').read_text()


def test_sigterm_stops_a_background_sweep_within_seconds_and_records_its_runs_as_interrupted(tmp_path):
    proc, pid = _start_slow_sweep(tmp_path, background=True)
    run = tmp_path / 'out' / 'gamma0.5' / 'seed0'
    _wait(lambda: (run / 'student.last.pt').is_file(), proc=proc)
    os.kill(pid, signal.SIGTERM)
    start = time.monotonic()
    proc.wait(timeout=60)
    assert time.monotonic() - start < 30
    assert (tmp_path / 'rc').read_text().strip() == '130', (tmp_path / 'sweep.err').read_text()
    assert _states(tmp_path / 'out') == {'gamma0.5/seed0': 'interrupted'}
    assert not (run / 'error.txt').exists()


@pytest.mark.parametrize('name, term', [('gamma', 'wttm'), ('beta', 'wttm'), ('beta_corr', 'itrd'), ('beta_mi', 'itrd'),
                                        ('alpha_it', 'itrd')])
def test_short_names_reach_the_term_that_sets_them_in_a_wttm_itrd_recipe(tmp_path, cifar100_env, monkeypatch, capsys,
                                                                        name, term):
    monkeypatch.chdir(tmp_path)
    args = ['sweep', 'cifar100/wttm_itrd/resnet8x4_from_resnet32x4', '--grid', f'{name}=0.5,1.5', '--seeds', '0',
            '--set', 'models.teacher_model.src_ckpt=null', '-o', 'sw', '--dry-run']
    assert main(args) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f'--set train.criterion.kwargs.sub_terms.{term}.criterion.kwargs.{name}=0.5' in out
