"""A fast configuration of `ttm-distill demo` on the real digits data."""
import json
import re
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, cli, cli_env, ok

from ttm_torchdistill.data import DigitsDataset
from ttm_torchdistill.tools.demo import METHODS


def test_digits_splits_are_fixed_disjoint_and_stratified():
    splits = {s: DigitsDataset(s) for s in ('train', 'val', 'test')}
    assert sum(len(d) for d in splits.values()) == 1797
    images = {s: {tuple(x.flatten().tolist()) for x in d.images} for s, d in splits.items()}
    assert not images['train'] & images['test'] and not images['val'] & images['test']
    for d in splits.values():
        counts = d.targets.bincount(minlength=10)
        assert counts.min() >= 0.9 * counts.float().mean()
        assert 0.0 <= d.images.min() and d.images.max() <= 1.0 and d.images.shape[1:] == (1, 8, 8)
    assert DigitsDataset('val').targets.tolist() == splits['val'].targets.tolist()
    with pytest.raises(ValueError, match="split='dev' is invalid"):
        DigitsDataset('dev')


def test_fast_demo_learns_and_reports(tmp_path):
    """The quick start (docs/getting-started.md), `make demo`, with fewer seeds and epochs."""
    out = tmp_path / 'runs'
    result = subprocess.run(['make', '-C', str(ROOT), 'demo', f'DEMO_ARGS=--out {out} --seeds 0 --epochs 6'],
                            cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=900)
    ok(result)
    data = json.loads((out / 'demo.json').read_text())
    assert data['teacher_test_top1'] > 90.0  # chance is 10%
    assert [row['method'] for row in data['rows']] == list(METHODS)
    for row in data['rows']:
        assert row['test_top1_mean'] > 80.0, row
        assert 0.0 < row['test_entropy_mean'] < 2.31  # below log(10): the students are not uniform
    assert (out / 'demo.png').stat().st_size > 10_000
    # the printed table carries the same numbers as the JSON
    printed = {}
    for line in result.stdout.splitlines():
        m = re.match(r'^(student alone \(CE\)|KD|TTM|WTTM)\s+([\d.]+) \+- ([\d.]+)\s+([\d.]+)\s+([\d.]+)$', line)
        if m:
            printed[m.group(1)] = (float(m.group(2)), float(m.group(4)))
    assert len(printed) == 4, result.stdout
    for row in data['rows']:
        assert printed[row['label']] == (round(row['test_top1_mean'], 2), round(row['test_entropy_mean'], 3))
    # a re-run reuses the trained teacher
    again = cli(['demo', '--out', out, '--seeds', '1', '--epochs', '2'], tmp_path)
    assert again.returncode == 0 and 'reusing the trained teacher' in again.stdout


def test_demo_grid_is_a_sweep_per_method(tmp_path, monkeypatch, capsys):
    """`demo --grid` runs `ttm-distill sweep` (one mechanism), here on a reduced grid, and picks on validation."""
    from ttm_torchdistill.tools import demo

    monkeypatch.setattr(demo, 'GRID', {'wttm': {'gamma': (0.25, 0.8), 'beta': (1.0,)}})
    monkeypatch.chdir(tmp_path)
    results = demo.run_grid(tmp_path / 'grid', seeds=(0,), epochs=2)
    assert [(r['method'], r['gamma'], r['beta']) for r in sorted(results, key=lambda r: r['gamma'])] == [
        ('wttm', 0.25, 1.0), ('wttm', 0.8, 1.0)]
    manifest = json.loads((tmp_path / 'grid/wttm/sweep.json').read_text())
    assert len(manifest['runs']) == 2
    for run in manifest['runs']:  # each point's mean is its runs' best validation top-1; no test pass ran
        summary = json.loads((tmp_path / 'grid/wttm' / run['dir'] / 'summary.json').read_text())
        assert summary['student_test_top1'] is None and '--no-test' in run['command']
        assert 'train.num_epochs=2' in run['command']  # demo --grid --epochs 2
        assert len(Path(summary['metrics']).read_text().splitlines()) == 2
        (row,) = [r for r in results if r['gamma'] == float(run['values']['gamma'])]
        assert row['val_top1_mean'] == summary['best_val_top1']
    best = max(results, key=lambda r: r['val_top1_mean'])
    assert f'best wttm: gamma={best["gamma"]}, beta=1.0' in capsys.readouterr().out
    assert json.loads((tmp_path / 'grid/grid.json').read_text()) == results
