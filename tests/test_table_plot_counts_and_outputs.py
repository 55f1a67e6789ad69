"""`table`'s counts (each file once, test summaries and non-finite values named) and `plot` of sweep folders; every
failure of either is one line, and their outputs are checked first and written atomically."""
import errno
import json
import os
import shutil

import pytest
from conftest import TINY, cli, ok

from ttm_torchdistill.cli import main

RECIPE = 'cifar100/wttm/resnet8x4_from_resnet32x4'
METRICS_LINE = {'epoch': 1, 'train_loss': 1.0, 'lr': 0.1, 'val_top1': 50.0}


def _summary(path, val=70.0, test=69.0, **extra):
    """A summary as `train --summary` writes it; ``text``: the file's text as given (NaN literals of older files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {'recipe': RECIPE, 'seed': 0, 'best_val_top1': val, 'student_test_top1': test, 'teacher_test_top1': 79.0,
            'overrides': [f'models.student_model.dst_ckpt={path.parent}/s.pt'], 'paper_top1': 76.06, **extra}
    path.write_text(json.dumps(data))  # Python writes NaN / Infinity literals, as versions before strict JSON did
    return path


def _cli(capsys, args):
    """``ttm-distill ARGS`` in this process: (exit code, stdout, the non-empty stderr lines)."""
    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    assert 'Traceback' not in captured.out + captured.err
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def _error(capsys, args, code, *fragments):
    got, out, lines = _cli(capsys, args)
    assert got == code, (out, lines)
    assert len(lines) == 1 and lines[0].startswith('ttm-distill: error: '), lines
    for fragment in fragments:
        assert str(fragment) in lines[0], lines[0]
    return lines[0]


def _markdown_rows(text):
    lines = [line for line in text.splitlines() if line.startswith('| ')]
    return [[c.strip() for c in line.strip('|').split('|')] for line in lines[1:]]


def _strict(text):
    def refuse(constant):
        raise AssertionError(f'{constant} in JSON output')
    return json.loads(text, parse_constant=refuse)


# -- table: every file once, test summaries left out ----------------------------------------------------------------

@pytest.fixture
def three_runs(tmp_path):
    root = tmp_path / 'runs'
    for seed, val in enumerate((70.0, 71.0, 72.0)):
        _summary(root / f's{seed}/summary.json', val=val, seed=seed)
    return root


@pytest.mark.parametrize('extra', [['runs'], ['runs/s0/summary.json'], ['runs/s0/../s1/summary.json'], ['link']])
def test_a_file_reached_twice_counts_once(capsys, monkeypatch, tmp_path, three_runs, extra):
    (tmp_path / 'link').symlink_to(three_runs / 's2/summary.json')
    monkeypatch.chdir(tmp_path)
    code, out, lines = _cli(capsys, ['table', 'runs/', *extra])
    assert code == 0 and lines == []
    (row,) = _markdown_rows(out)
    assert row[2] == '3' and row[3] == '71.00 +- 1.00'
    code, out, _ = _cli(capsys, ['table', *extra, 'runs', '--format', 'json'])
    (row,) = _strict(out)
    assert row['runs'] == 3 and row['val_top1_finite'] == 3 and row['nonfinite_files'] == []


def test_test_summaries_are_left_out_with_one_note_each(capsys, tmp_path, three_runs):
    test = _summary(three_runs / 's0/test.json', val=70.0, test=99.0, kind='test')
    calibration = three_runs / 'calibration.json'
    calibration.write_text(json.dumps({'kind': 'calibrate', 'recipe': RECIPE, 'temperature': 1.5}))
    _summary(three_runs / 's1/summary.json', val=71.0, kind='train')  # a newer training summary says so
    code, out, lines = _cli(capsys, ['table', three_runs])
    assert code == 0
    (row,) = _markdown_rows(out)
    assert row[2] == '3' and row[4] == '69.00 +- 0.00'  # the test summary's 99.0 is not a run
    assert lines == [f'ttm-distill: {calibration}: a calibrate summary (`ttm-distill calibrate`), not a training '
                     'run: left out',
                     f'ttm-distill: {test}: a test summary (`ttm-distill test`), not a training run: left out']
    only_tests = tmp_path / 'tests'
    _summary(only_tests / 'a.json', kind='test')
    _summary(only_tests / 'b.json', kind='test')
    code, out, lines = _cli(capsys, ['table', only_tests])
    assert code == 2 and out == '' and len(lines) == 3
    assert all('a test summary' in line for line in lines[:2])
    assert lines[2].startswith('ttm-distill: error: table: no run summaries in ') and 'test summaries' in lines[2]


# -- table: values that are not finite stay counted ------------------------------------------------------------------

@pytest.fixture
def nonfinite_runs(tmp_path):
    root = tmp_path / 'runs'
    _summary(root / 'a.json', val=70.0, test=69.0)
    _summary(root / 'b.json', val=72.0, test=71.0)
    nan = _summary(root / 'c.json', val=float('nan'), test=70.0)
    inf = _summary(root / 'd.json', val=float('-inf'), test=float('inf'))
    null = _summary(root / 'e.json', val=None, test=68.0)  # strict JSON's null for a non-finite best
    return root, [nan, inf, null]


def test_nonfinite_results_stay_in_the_run_count_and_are_shown(capsys, nonfinite_runs):
    root, bad = nonfinite_runs
    code, out, lines = _cli(capsys, ['table', root])
    assert code == 0
    (row,) = _markdown_rows(out)
    assert row[2] == '5'
    assert row[3] == '71.00 +- 1.41 (2 of 5 finite)'
    assert row[4].endswith('(4 of 5 finite)') and row[4].startswith('69.50 +- ')
    assert lines == [f'ttm-distill: {bad[0]}: best_val_top1 is nan: not finite; counted in its row and shown as such',
                     f'ttm-distill: {bad[1]}: best_val_top1 is -inf, student_test_top1 is inf: not finite; counted in '
                     'its row and shown as such',
                     f'ttm-distill: {bad[2]}: best_val_top1 is null: not finite; counted in its row and shown as such']
    code, out, _ = _cli(capsys, ['table', root, '--format', 'json'])
    (row,) = _strict(out)
    assert (row['runs'], row['val_top1_finite'], row['tested'], row['test_top1_finite']) == (5, 2, 5, 4)
    assert row['nonfinite_files'] == [str(p) for p in bad]
    code, out, _ = _cli(capsys, ['table', root, '--format', 'csv'])
    header, values = out.splitlines()
    fields = dict(zip(header.split(','), values.split(','), strict=True))
    assert fields['runs'] == '5' and fields['val_top1_finite'] == '2' and fields['test_top1_finite'] == '4'
    assert fields['nonfinite_files'] == ' | '.join(str(p) for p in bad)


def test_runs_without_a_test_pass_are_counted_apart_from_non_finite_ones(capsys, tmp_path):
    root = tmp_path / 'runs'
    _summary(root / 'a.json', test=69.0)
    _summary(root / 'b.json', test=None, teacher_test_top1=None)  # train --no-test
    _summary(root / 'c.json', test=float('nan'))
    code, out, lines = _cli(capsys, ['table', root])
    (row,) = _markdown_rows(out)
    assert row[3] == '70.00 +- 0.00' and row[4] == '69.00 +- 0.00 (1 of 3: 1 untested, 1 not finite)'
    assert len(lines) == 1 and 'c.json: student_test_top1 is nan' in lines[0]
    (root / 'c.json').unlink()
    code, out, lines = _cli(capsys, ['table', root])
    (row,) = _markdown_rows(out)
    assert row[4] == '69.00 +- 0.00 (1 of 2 tested)' and lines == []


# -- table: foreign files and manifests ------------------------------------------------------------------------------

@pytest.mark.parametrize('edit, fragment', [
    ({'best_val_top1': 'abc'}, "best_val_top1='abc': expected a number or null"),
    ({'best_val_top1': True}, 'best_val_top1=True'),
    ({'student_test_top1': [1]}, 'student_test_top1=[1]'),
    ({'recipe': 5}, 'recipe=5: expected a recipe name'),
    ({'overrides': 'x=1'}, "overrides='x=1': expected a list"),
    ({'paper_top1': '76'}, "paper_top1='76'"),
    ({'kind': 'eval'}, "kind='eval'"),
])
def test_a_hand_edited_summary_is_one_line_and_the_rest_is_tabulated(capsys, three_runs, edit, fragment):
    bad = _summary(three_runs / 'edited/summary.json', **edit)
    code, out, lines = _cli(capsys, ['table', three_runs])
    assert code == 0
    (row,) = _markdown_rows(out)
    assert row[2] == '3'
    assert len(lines) == 1 and lines[0].startswith(f'ttm-distill: {bad}: skipped, not a') and fragment in lines[0]


@pytest.fixture(scope='module')
def sweep(tmp_path_factory):
    """A finished 2-point, 1-seed sweep of the tiny recipe, made by the real command."""
    cwd = tmp_path_factory.mktemp('sweep')
    result = cli(['sweep', TINY, '--grid', 'gamma=0.5,1.0', '--seeds', '0', '-o', 'out'], cwd)
    ok(result)
    return cwd / 'out'


@pytest.fixture
def sweep_copy(tmp_path, sweep):
    return shutil.copytree(sweep, tmp_path / 'sweep')


def _manifest_edits(manifest):
    """Foreign or broken sweep.json texts, each with a fragment its one line holds."""
    no_label = json.loads(json.dumps(manifest))
    del no_label['runs'][1]['values']['gamma']
    bad_override = {**manifest, 'overrides': [1]}
    bad_grid = {**manifest, 'grid': ['gamma']}
    no_runs = {k: v for k, v in manifest.items() if k != 'runs'}
    return [('{"recipe": "x", ', 'unreadable'), ('[1, 2]', 'sweep.json'), ('{"runs": 3}', 'sweep.json'),
            (json.dumps(no_runs), "'runs'"), (json.dumps(bad_grid), 'grid'),
            (json.dumps(bad_override), 'overrides'), (json.dumps(no_label), "runs[1].values has no 'gamma'")]


@pytest.mark.parametrize('case', range(7))
@pytest.mark.parametrize('command', ['table', 'plot'])
def test_a_foreign_or_broken_sweep_json_is_skipped_with_a_note_and_the_runs_are_shown(capsys, tmp_path, sweep_copy,
                                                                                      case, command):
    text, fragment = _manifest_edits(json.loads((sweep_copy / 'sweep.json').read_text()))[case]
    (sweep_copy / 'sweep.json').write_text(text)
    args = [command, sweep_copy] + (['-o', tmp_path / 'p.png'] if command == 'plot' else [])
    code, out, lines = _cli(capsys, args)
    assert code == 0, lines
    notes = [line for line in lines if str(sweep_copy / 'sweep.json') in line]
    assert len(notes) == 1 and fragment in notes[0] and 'skipped' in notes[0], lines
    assert not any(line.startswith('ttm-distill: error') for line in lines)
    if command == 'table':  # the two runs' summaries, one row each (their gamma differs)
        assert len(_markdown_rows(out)) == 2 and all('gamma' in row[1] for row in _markdown_rows(out)), out
    else:
        assert (tmp_path / 'p.png').stat().st_size > 0


def test_a_sweep_run_whose_best_is_not_finite_is_named_and_its_point_has_no_mean(capsys, sweep_copy):
    for point, value in (('gamma0.5', 'NaN'), ('gamma1.0', '"abc"')):
        path = sweep_copy / point / 'seed0/summary.json'
        text = path.read_text()
        path.write_text(text.replace(f'"best_val_top1": {json.loads(text)["best_val_top1"]}',
                                     f'"best_val_top1": {value}'))
    code, out, lines = _cli(capsys, ['table', sweep_copy])
    assert code == 0
    rows = _markdown_rows(out)
    assert [r[-1] for r in rows] == ['n/a', 'n/a'] and all(r[0] == '' for r in rows)  # no mean, no best point
    assert len(lines) == 2, lines
    assert str(sweep_copy / 'gamma0.5/seed0/summary.json') in lines[0] and 'is nan' in lines[0]
    assert 'not a finite number: grid point gamma0.5 has no mean' in lines[0]
    # a string is no result: that summary is not a training run's, as `table` of loose summaries and `sweep` see it
    assert str(sweep_copy / 'gamma1.0/seed0/summary.json') in lines[1] and "best_val_top1='abc'" in lines[1]
    assert 'gamma1.0/seed0 does not count as finished' in lines[1]


# -- table: the output file ------------------------------------------------------------------------------------------

def test_table_output_is_checked_before_any_work(capsys, tmp_path, three_runs):
    (tmp_path / 'file').write_text('keep\n')
    _error(capsys, ['table', tmp_path / 'nowhere', '-o', tmp_path / 'file/t.md'], 2, 'is a file, not a folder')
    _error(capsys, ['table', three_runs, '-o', three_runs], 2, 'is a folder')
    assert (tmp_path / 'file').read_text() == 'keep\n'
    if os.geteuid() != 0:  # root may write anywhere
        (tmp_path / 'ro').mkdir(mode=0o555)
        _error(capsys, ['table', three_runs, '-o', tmp_path / 'ro/t.md'], 2, 'no permission')


def test_table_replaces_its_own_output_and_never_reads_it(capsys, three_runs):
    out = three_runs / 'table.json'
    for _ in range(2):
        code, stdout, lines = _cli(capsys, ['table', three_runs, '--format', 'json', '-o', out])
        assert code == 0 and stdout == f'wrote {out}\n' and lines == []
        (row,) = _strict(out.read_text())
        assert row['runs'] == 3
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _full_disk(monkeypatch):
    import tempfile

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(tempfile, 'mkstemp', no_space)


def test_a_full_disk_is_one_line_and_the_earlier_table_stays(capsys, monkeypatch, tmp_path, three_runs):
    out = tmp_path / 'table.md'
    out.write_text('earlier\n')
    _full_disk(monkeypatch)
    _error(capsys, ['table', three_runs, '-o', out], 1, f'cannot write {out}', 'No space left')
    assert out.read_text() == 'earlier\n' and [p.name for p in tmp_path.iterdir() if 'table' in p.name] == ['table.md']


# -- plot ------------------------------------------------------------------------------------------------------------

def test_plot_and_table_of_a_sweep_folder_through_the_real_command(tmp_path, sweep):
    result = cli(['plot', sweep, '-o', 'sweep.svg'], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == 'wrote sweep.svg\n' and 'Traceback' not in result.stderr
    svg = (tmp_path / 'sweep.svg').read_text()
    assert 'gamma=0.5 seed 0' in svg and 'gamma=1.0 seed 0' in svg  # the legend's labels
    result = cli(['table', sweep, '--format', 'json'], tmp_path)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)['rows']
    assert sorted(r['point'] for r in rows) == ['gamma0.5', 'gamma1.0'] and all(r['finished'] == 1 for r in rows)


def test_plot_skips_sweep_runs_without_metrics_with_a_note(capsys, tmp_path, sweep_copy):
    (sweep_copy / 'gamma1.0/seed0/run.metrics.jsonl').unlink()
    code, out, lines = _cli(capsys, ['plot', sweep_copy, '-o', tmp_path / 'p.png'])
    assert code == 0 and out == f'wrote {tmp_path / "p.png"}\n' and (tmp_path / 'p.png').stat().st_size > 10_000
    assert lines == [f'ttm-distill: {sweep_copy}: gamma1.0/seed0 (finished): no metrics yet, not plotted']
    (sweep_copy / 'gamma0.5/seed0/run.metrics.jsonl').write_text('')
    code, out, lines = _cli(capsys, ['plot', sweep_copy, '-o', tmp_path / 'q.png'])
    assert code == 2 and len(lines) == 3 and not (tmp_path / 'q.png').exists()
    assert lines[2] == f'ttm-distill: error: {sweep_copy}: no run of the sweep has metrics yet (2 run(s) in sweep.json)'


@pytest.mark.parametrize('text, fragment', [('', 'empty metrics file'), ('\n\n', 'empty metrics file'),
                                            ('{"epoch": 1}\n{"epo', 'line 2 is not JSON'),
                                            ('{"epoch": 1, "lr": "high"}\n', "line 1: lr='high' is not a number")])
def test_an_empty_or_broken_metrics_file_is_one_line(capsys, tmp_path, text, fragment):
    metrics = tmp_path / 'run.metrics.jsonl'
    metrics.write_text(text)
    _error(capsys, ['plot', metrics, '-o', tmp_path / 'p.png'], 2, metrics, fragment)
    assert not (tmp_path / 'p.png').exists()


@pytest.fixture
def metrics(tmp_path):
    path = tmp_path / 'run.metrics.jsonl'
    path.write_text(json.dumps(METRICS_LINE) + '\n' + json.dumps({**METRICS_LINE, 'epoch': 2}) + '\n')
    return path


@pytest.mark.parametrize('name, fragment', [('p.xyz', '.xyz is not an image format'),
                                            ('p.pgf', 'pgf needs a LaTeX installation'),
                                            ('file/p.png', 'is a file, not a folder')])
def test_a_bad_plot_output_is_one_line_before_anything_is_read(capsys, tmp_path, name, fragment):
    (tmp_path / 'file').write_text('keep\n')
    # the run does not exist: the output is refused first
    _error(capsys, ['plot', tmp_path / 'missing.log', '-o', tmp_path / name], 2, f"plot -o='{tmp_path / name}'",
           fragment)
    assert sorted(p.name for p in tmp_path.iterdir()) == ['file']


@pytest.mark.parametrize('name, written, magic', [('p.png', 'p.png', b'\x89PNG'), ('p.PDF', 'p.PDF', b'%PDF'),
                                                  ('p.svg', 'p.svg', b'<?xml'), ('p.jpg', 'p.jpg', b'\xff\xd8'),
                                                  ('p.jpeg', 'p.jpeg', b'\xff\xd8'), ('p', 'p.png', b'\x89PNG')])
def test_the_printed_path_is_the_file_written(capsys, tmp_path, metrics, name, written, magic):
    code, out, lines = _cli(capsys, ['plot', metrics, '-o', tmp_path / name])
    assert code == 0 and lines == [] and out == f'wrote {tmp_path / written}\n'
    assert (tmp_path / written).read_bytes().startswith(magic)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(['run.metrics.jsonl', written])  # no temporary file


def test_plot_replaces_its_own_image_but_not_a_folder(capsys, tmp_path, metrics):
    image = tmp_path / 'p.png'
    image.write_bytes(b'old')
    assert _cli(capsys, ['plot', metrics, '-o', image])[0] == 0 and image.read_bytes().startswith(b'\x89PNG')
    (tmp_path / 'folder.png').mkdir()
    _error(capsys, ['plot', metrics, '-o', tmp_path / 'folder.png'], 2, 'is a folder')


def test_a_full_disk_keeps_the_earlier_figure(capsys, monkeypatch, tmp_path, metrics):
    image = tmp_path / 'p.png'
    image.write_bytes(b'old')
    _full_disk(monkeypatch)
    _error(capsys, ['plot', metrics, '-o', image], 1, f'cannot write {image}', 'No space left')
    assert image.read_bytes() == b'old'


def test_plot_without_matplotlib_names_the_extra(capsys, monkeypatch, tmp_path, metrics):
    monkeypatch.setattr('ttm_torchdistill.tools.plot.pyplot', lambda: None)
    _error(capsys, ['plot', metrics, '-o', tmp_path / 'p.png'], 2, "pip install 'ttm-torchdistill[plot]'")
