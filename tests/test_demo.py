"""A fast configuration of `ttm-distill demo` on the real digits data."""
import json
import re

import pytest
from conftest import run_cli

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
    out = tmp_path / 'runs'
    result = run_cli(['demo', '--out', out, '--seeds', '0', '--epochs', '6'], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
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
    again = run_cli(['demo', '--out', out, '--seeds', '1', '--epochs', '2'], tmp_path)
    assert again.returncode == 0 and 'reusing the trained teacher' in again.stdout
