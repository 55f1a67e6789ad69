"""A sweep folder's records: the folder may be copied or moved (every command reads and writes the folder it is
given, never the place the manifest was written in), and tampered or foreign records (a run description, a
summary.json) are refused or skipped in one line, `sweep`, `lockstep` and `table` agreeing on what counts as
finished."""
import json
import shutil

import pytest
from conftest import TINY, cli, ok, one_error_line
from test_sweep import _digest

GRID = ['--grid', 'gamma=0.5,0.8', '--seeds', '0']
RUNS = ['gamma0.5/seed0', 'gamma0.8/seed0']


@pytest.fixture(scope='module')
def lockstep_sweep(tmp_path_factory):
    """A finished 2-point lockstep sweep of the tiny recipe: (cwd, DIR)."""
    cwd = tmp_path_factory.mktemp('records')
    ok(cli(['sweep', TINY, *GRID, '-o', 'out', '--lockstep'], cwd))
    return cwd, cwd / 'out'


def _unfinish(folder, run):
    """A run interrupted after its last epoch's checkpoint, before its summary: the next call resumes it."""
    (folder / run / 'summary.json').unlink()


def test_a_copied_or_moved_sweep_folder_trains_and_writes_only_where_it_is(lockstep_sweep, tmp_path):
    cwd, out = lockstep_sweep
    original = _digest(out)
    copy = tmp_path / 'copy'
    shutil.copytree(out, copy)
    for run in RUNS:
        _unfinish(copy, run)
    result = cli(['lockstep', copy, *RUNS], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert _digest(out) == original  # the original folder is untouched
    for run in RUNS:
        log = (copy / run / 'run.log').read_text()
        assert f'resumed from {copy / run}/' in log, log[-2000:]
        assert json.loads((copy / run / 'summary.json').read_text())['best_val_top1'] is not None
    moved = tmp_path / 'moved'
    copy.rename(moved)
    _unfinish(moved, RUNS[1])
    result = cli(['lockstep', moved, RUNS[1]], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'resumed from {moved / RUNS[1]}/' in (moved / RUNS[1] / 'run.log').read_text()
    # the group of one says so
    assert 'alone (the only run of its lockstep group)' in (moved / RUNS[1] / 'output.log').read_text()
    assert 'other run(s) ()' not in (moved / RUNS[1] / 'output.log').read_text()
    # and `sweep` over the moved folder finds every run finished
    again = ok(cli(['sweep', TINY, *GRID, '-o', moved, '--lockstep'], tmp_path))
    assert 'run(s) to do' not in again.stdout and again.stdout.count(' 1/1 ') == 2, again.stdout
    assert _digest(out) == original


def _tampered(tmp_path, lockstep_sweep, change):
    folder = tmp_path / 'tampered'
    shutil.copytree(lockstep_sweep[1], folder)
    manifest = json.loads((folder / 'sweep.json').read_text())
    change(manifest['runs'][0])
    (folder / 'sweep.json').write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize('change, fragments', [
    (lambda e: e['run'].update(command='fit'), ["runs[0].run (gamma0.5/seed0): not a run description: command='fit'",
                                                'expected one of train, test, calibrate']),
    (lambda e: e['run'].update(seed='0'), ["seed='0': expected an integer or null"]),
    (lambda e: e['run'].pop('recipe'), ['not a run description: no recipe']),
    (lambda e: e.update(run=None), ['not a run description: a NoneType, not an object']),
    (lambda e: e['run'].update(overrides=[o.replace(e['run']['summary'].rsplit('/', 3)[0], '/tmp/elsewhere')
                                          for o in e['run']['overrides']]),
     ['--set models.student_model.dst_ckpt /tmp/elsewhere/', "is outside the run's folder"]),
    (lambda e: e['run'].update(run_log='/tmp/elsewhere/run.log'), ['--run-log /tmp/elsewhere/run.log is outside']),
    (lambda e: e.update(dir='../escape/seed0'), ['not a sweep.json written by', "runs[0].dir='../escape/seed0'"]),
    (lambda e: e.update(ckpt='../x.pt'), ["runs[0].ckpt='../x.pt': expected a file name"]),
])
def test_a_tampered_run_record_is_one_line_and_nothing_runs(lockstep_sweep, tmp_path, change, fragments):
    folder = _tampered(tmp_path, lockstep_sweep, change)
    _unfinish(folder, RUNS[0])
    before = _digest(folder)
    one_error_line(cli(['lockstep', folder, RUNS[0]], tmp_path), 2, *fragments)
    assert _digest(folder) == before
    assert not (tmp_path / 'elsewhere').exists() and not (tmp_path / 'escape').exists()


@pytest.mark.parametrize('content, why', [
    ({'accuracy': 99.0}, 'missing recipe, best_val_top1, student_test_top1'),
    ({'version': 99, 'recipe': 'tiny', 'best_val_top1': 50.0, 'student_test_top1': None},
     'version=99: this ttm-distill reads versions up to 1'),
    ({'kind': 'test', 'recipe': 'tiny', 'best_val_top1': 50.0, 'student_test_top1': 40.0},
     'a test summary (`ttm-distill test`), not a training run'),
])
def test_a_foreign_summary_is_not_a_finished_run_for_sweep_lockstep_and_table_alike(lockstep_sweep, tmp_path,
                                                                                  content, why):
    folder = tmp_path / 'foreign'
    shutil.copytree(lockstep_sweep[1], folder)
    foreign = folder / RUNS[0] / 'summary.json'
    foreign.write_text(json.dumps(content))
    table = ok(cli(['table', folder, '--format', 'json'], tmp_path))
    assert f'ttm-distill: {foreign}: ' in table.stderr and why in table.stderr, table.stderr
    assert f'{RUNS[0]} does not count as finished' in table.stderr
    rows = {r['point']: r for r in json.loads(table.stdout)['rows']}
    assert (rows['gamma0.5']['finished'], rows['gamma0.8']['finished']) == (0, 1)
    result = ok(cli(['sweep', TINY, *GRID, '-o', folder, '--lockstep'], tmp_path))
    assert f'note: {foreign}: ' in result.stdout and why in result.stdout
    assert '1 of 2 run(s) to do' in result.stdout, result.stdout
    assert json.loads((folder / RUNS[0] / 'attempts/1/summary.json').read_text()) == content  # kept, set aside
    assert json.loads(foreign.read_text())['kind'] == 'train'  # the resumed run's own
    states = [e['state'] for e in json.loads((folder / 'sweep.json').read_text())['runs']]
    assert states == ['finished', 'finished']


@pytest.mark.parametrize('slurm', ['12345', {'job_id': 12345}])
def test_a_tampered_slurm_record_is_one_line(lockstep_sweep, tmp_path, slurm):
    folder = tmp_path / 'slurm'
    shutil.copytree(lockstep_sweep[1], folder)
    manifest = json.loads((folder / 'sweep.json').read_text())
    (folder / 'sweep.json').write_text(json.dumps({**manifest, 'slurm': slurm}))
    one_error_line(cli(['sweep', TINY, *GRID, '-o', folder], tmp_path), 2, 'not a sweep.json written by',
                   "'slurm' is not an object with a string job_id")


def test_a_failed_run_records_its_own_error_line(tmp_path):
    """A sweep's runs write their failure to error.txt themselves (the launcher does not read it back from their
    output); `train --error-record PATH` is how the sweep asks for it."""
    result = cli(['train', TINY, '--device', 'cpu', '--resume', '--error-record', 'err/error.txt'], tmp_path)
    line = one_error_line(result, 2, '--resume: no checkpoint to resume from')
    assert (tmp_path / 'err/error.txt').read_text() == f'exit code 2: {line}\n'


def test_a_sweep_run_s_error_is_its_record(tmp_path):
    args = ['sweep', TINY, '--grid', 'gamma=0.5', '--seeds', '0', '-o', 'out',
            '--set', 'datasets.blobs/train.init.kwargs.nan_from=0']
    result = cli(args, tmp_path)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    manifest = json.loads((tmp_path / 'out/sweep.json').read_text())
    (entry,) = manifest['runs']
    assert entry['run']['error_record'] == str(tmp_path / 'out' / entry['dir'] / 'error.txt')
    error = (tmp_path / 'out' / entry['dir'] / 'error.txt').read_text()
    assert error.startswith('exit code 1: ttm-distill: error: non-finite loss') and entry['error'] == error.strip()
