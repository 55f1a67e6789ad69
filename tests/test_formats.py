"""The files others read, each defined once: the run summary and the sweep manifest carry their format's version (a
newer one is named, not misread), and the metrics record takes any diagnostic a loss reports."""
import json

import pytest
from conftest import TINY, cli, one_error_line

from ttm_torchdistill.errors import UsageError
from ttm_torchdistill.formats import manifest, metrics, summary


def test_a_training_summary_carries_its_version_and_a_newer_one_is_skipped_with_a_note(tmp_path):
    assert cli(['train', TINY, '--device', 'cpu', '--set', 'train.num_epochs=1', '--summary', 'runs/a.json'],
               tmp_path).returncode == 0
    written = json.loads((tmp_path / 'runs/a.json').read_text())
    assert written['version'] == summary.VERSION and summary.summary_problem(written) is None
    (tmp_path / 'runs/b.json').write_text(json.dumps(dict(written, version=summary.VERSION + 1)))
    result = cli(['table', 'runs'], tmp_path)
    notes = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 0 and len(notes) == 1 and 'b.json: skipped' in notes[0], result.stderr
    assert f'version={summary.VERSION + 1}: this ttm-distill reads versions up to {summary.VERSION}' in notes[0]
    assert '| 1 |' in result.stdout  # a.json, counted once


def test_a_sweep_manifest_of_a_newer_version_is_refused_by_the_sweep(tmp_path):
    args = ['sweep', TINY, '--grid', 'gamma=0.5', '--seeds', '0', '--set', 'train.num_epochs=1', '-o', 'out']
    assert cli(args, tmp_path).returncode == 0
    data = json.loads((tmp_path / 'out/sweep.json').read_text())
    assert data['version'] == manifest.VERSION and manifest.manifest_problem(data) is None
    (tmp_path / 'out/sweep.json').write_text(json.dumps(dict(data, version=manifest.VERSION + 1)))
    one_error_line(cli(args, tmp_path), 2, 'sweep.json: not a sweep.json written by `ttm-distill sweep`',
                   f'version={manifest.VERSION + 1}')


def test_a_metrics_record_takes_any_diagnostic_and_refuses_what_is_not_a_number(tmp_path):
    path = tmp_path / 'run.metrics.jsonl'
    metrics.append_record(path, {'epoch': 1, 'train_loss': 1.0, 'recipe': 'r', 'u_gamma': 1.2, 'loss.crd': None})
    records = metrics.read_records(path)
    assert metrics.diagnostic_keys(records) == ['u_gamma', 'loss.crd'] and records[0]['loss.crd'] is None
    metrics.append_record(path, {'epoch': 2, 'corr': 'abc'})
    with pytest.raises(UsageError, match="line 2: corr='abc' is not a number"):
        metrics.read_records(path)
