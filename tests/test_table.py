"""`ttm-distill table`: grouping, mean +- std, the paper column, formats and bad files."""
import csv
import io
import json
import statistics

import pytest
from conftest import cli

RECIPE = 'cifar100/wttm/resnet8x4_from_resnet32x4'


def _summary(folder, name, recipe=RECIPE, seed=0, val=70.0, test=69.0, overrides=(), paper=76.06):
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {'recipe': recipe, 'seed': seed, 'best_val_top1': val, 'student_test_top1': test,
            'teacher_test_top1': 79.0, 'overrides': [f'models.student_model.dst_ckpt=runs/{name}.pt', *overrides],
            'paper_top1': paper, 'epochs_run': 240}
    path.write_text(json.dumps(data))
    return data


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / 'runs'
    vals, tests = [76.1, 75.5, 76.9], [76.0, 75.4, 76.8]
    for seed, (val, test) in enumerate(zip(vals, tests, strict=True)):
        _summary(root, f'wttm/seed{seed}/summary.json', seed=seed, val=val, test=test)
    # another beta is another row; KD is another recipe with its own paper number
    _summary(root, 'beta4/summary.json', val=74.0, test=73.5,
             overrides=['train.criterion.kwargs.sub_terms.wttm.criterion.kwargs.beta=4'])
    _summary(root, 'kd/s0.json', recipe='cifar100/kd/resnet8x4_from_resnet32x4', val=73.0, test=None, paper=73.33)
    (root / 'corrupt.json').write_text('{"recipe": "x", "best_val')
    (root / 'notes.json').write_text(json.dumps({'hello': 'world'}))
    return root, vals, tests


def test_markdown_rows_group_by_recipe_and_overrides_with_mean_std_and_paper(tmp_path, runs):
    root, vals, tests = runs
    result = cli(['table', root], tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith('| recipe | overrides | runs | best val top-1 | student test top-1 | paper top-1')
    rows = [[c.strip() for c in line.strip('|').split('|')] for line in lines[2:]]
    assert len(rows) == 3
    kd, wttm, wttm_beta4 = rows  # sorted by recipe, then overrides
    assert wttm[0] == RECIPE and wttm[1] == '' and wttm[2] == '3'
    assert wttm[3] == f'{statistics.fmean(vals):.2f} +- {statistics.stdev(vals):.2f}'
    assert wttm[4] == f'{statistics.fmean(tests):.2f} +- {statistics.stdev(tests):.2f}'
    assert wttm[5] == '76.06' and wttm[6] == f'{statistics.fmean(tests) - 76.06:+.2f}'
    assert wttm_beta4[1] == '`train.criterion.kwargs.sub_terms.wttm.criterion.kwargs.beta=4`' and wttm_beta4[2] == '1'
    assert wttm_beta4[3] == '74.00 +- 0.00'
    # no test pass: the difference falls back to the best validation top-1
    assert kd[0] == 'cifar100/kd/resnet8x4_from_resnet32x4' and kd[4] == 'n/a' and kd[6] == f'{73.0 - 73.33:+.2f}'
    problems = result.stderr.strip().splitlines()
    assert len(problems) == 2 and 'Traceback' not in result.stderr
    assert any('corrupt.json' in p and 'not readable JSON' in p for p in problems)
    assert any('notes.json' in p and 'not a' in p for p in problems)


def test_csv_and_json_formats_and_output_file(tmp_path, runs):
    root, vals, _ = runs
    result = cli(['table', root / 'wttm', '--format', 'csv'], tmp_path)
    assert result.returncode == 0, result.stderr
    (row,) = list(csv.DictReader(io.StringIO(result.stdout)))
    assert row['recipe'] == RECIPE and int(row['runs']) == 3
    assert float(row['val_top1_mean']) == pytest.approx(statistics.fmean(vals))
    result = cli(['table', root / 'wttm/seed0/summary.json', root / 'wttm/seed1/summary.json', '--format', 'json',
                      '-o', 'out/table.json'], tmp_path)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads((tmp_path / 'out/table.json').read_text())
    assert row['runs'] == 2 and row['val_top1_mean'] == pytest.approx(statistics.fmean(vals[:2]))
    assert row['paper_top1'] == 76.06


@pytest.mark.parametrize('make, fragment', [
    (lambda d: None, 'no such file or folder'),
    (lambda d: (d / 'empty').mkdir(), 'no run summaries'),
])
def test_nothing_to_tabulate_is_one_line_and_exit_2(tmp_path, make, fragment):
    make(tmp_path)
    result = cli(['table', tmp_path / 'empty'], tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and 'Traceback' not in result.stderr
