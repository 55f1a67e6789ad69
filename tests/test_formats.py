"""The files others read, each defined once: the run summary and the sweep manifest carry their format's version (a
newer one is named, not misread), and the metrics record takes any diagnostic a loss reports."""
import json
from pathlib import Path

import pytest
from conftest import TINY, cli, one_error_line

from ttm_torchdistill.description import RunDescription
from ttm_torchdistill.errors import UsageError
from ttm_torchdistill.formats import manifest, metrics, summary
from ttm_torchdistill.outputs import dumps_json
from ttm_torchdistill.sweep.folder import save_manifest
from ttm_torchdistill.sweep.plan import plan_sweep


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


def _round_trip(path, record_type):
    """The file's text, read into its record and written again."""
    text = path.read_text()
    return dumps_json(record_type.from_json(json.loads(text)).to_json()) + '\n', text


def test_a_summary_of_each_kind_reads_into_its_record_and_writes_back_the_same_file(tmp_path):
    fast = ['--device', 'cpu', '--set', 'train.num_epochs=1']
    assert cli(['train', TINY, *fast, '--seed', '3', '--summary', 'train.json'], tmp_path).returncode == 0
    assert cli(['test', TINY, *fast, '--summary', 'test.json'], tmp_path).returncode == 0
    assert cli(['calibrate', TINY, '--device', 'cpu', '-o', 'cal', '--summary', 'cal.json'], tmp_path).returncode == 0
    for name, kind in (('train.json', 'train'), ('test.json', 'test'), ('cal.json', 'calibrate')):
        written, text = _round_trip(tmp_path / name, summary.RunSummary)
        assert written == text
        record = summary.RunSummary.from_json(json.loads(text))
        assert record.kind == kind and record.version == summary.VERSION and record.extra == {}
    trained = summary.read_training_summary(tmp_path / 'train.json')[0]
    assert trained.seed == 3 and trained.epochs_run == 1 and trained.overrides == ('train.num_epochs=1',)
    assert list(trained.to_json())[:3] == ['version', 'kind', 'recipe'] and 'epochs_run' not in json.loads(
        (tmp_path / 'test.json').read_text())


def test_a_summary_record_reads_older_files_keeps_other_keys_and_refuses_a_newer_or_foreign_one(tmp_path):
    older = summary.RunSummary.from_json({'recipe': 'r', 'best_val_top1': 70.0, 'student_test_top1': None})
    assert (older.version, older.kind, older.best_val_top1, older.wall_s) == (1, 'train', 70.0, None)
    other = summary.RunSummary.from_json({'kind': 'test', 'recipe': 'r', 'note': 'theirs', 'epochs_run': 3})
    assert other.extra == {'note': 'theirs', 'epochs_run': 3}  # a test summary holds no epochs_run
    assert list(other.to_json())[-2:] == ['note', 'epochs_run']
    with pytest.raises(UsageError, match='^not a run summary: version=2: this ttm-distill reads versions up to 1$'):
        summary.RunSummary.from_json({'version': 2, 'recipe': 'r', 'best_val_top1': 1.0, 'student_test_top1': 1.0})
    with pytest.raises(UsageError, match='^not a run summary: not a JSON object$'):
        summary.RunSummary.from_json([1, 2])
    (tmp_path / 'foreign.json').write_text('{"accuracy": 99.0}')
    assert summary.read_training_summary(tmp_path / 'foreign.json') == (
        None, 'skipped, not a `ttm-distill train --summary` file: missing recipe, best_val_top1, student_test_top1')


@pytest.fixture
def planned(tmp_path):
    """A sweep's folder with its manifest as `sweep` writes it before any run (no training)."""
    sweep = plan_sweep(str(TINY), ['gamma=0.5,0.8'], [0, 1], ['train.num_epochs=1'], tmp_path / 'out')
    sweep.directory.mkdir()
    save_manifest(sweep)
    return sweep


def test_a_sweep_manifest_reads_into_its_record_and_writes_back_the_same_file(planned):
    written, text = _round_trip(planned.manifest_path, manifest.SweepManifest)
    assert written == text
    record = manifest.read_manifest(planned.directory)
    assert record.version == manifest.VERSION and record.slurm is None and record.slurm_array is None
    assert [a.label for a in record.grid] == ['gamma'] and record.grid[0].values == ('0.5', '0.8')
    assert record.seeds == (0, 1) and record.overrides == ('train.num_epochs=1',)
    entry = record.runs[0]
    assert (entry.point, entry.values, entry.seed, entry.dir, entry.ckpt) == ('gamma0.5', {'gamma': '0.5'}, 0,
                                                                              'gamma0.5/seed0', 'student.pt')
    assert entry.state == 'pending' and entry.group is None and entry['command'] == entry.command
    assert RunDescription.from_json(entry.run) == planned.runs[0].description
    assert record.identity.differences(planned.identity()) == []


def test_a_sweep_manifest_without_a_version_is_version_1_and_a_newer_or_foreign_one_is_one_line(planned):
    data = json.loads(planned.manifest_path.read_text())
    del data['version']
    assert manifest.SweepManifest.from_json(data).version == 1
    foreign_run = json.dumps(dict(data, runs=[{'point': 'p'}]))
    newer = manifest.VERSION + 1
    for text, problem in ((json.dumps(dict(data, version=newer)),
                           f'version={newer}: this ttm-distill reads versions up to {manifest.VERSION}'),
                          ('[1, 2]', 'the top level is list, not an object'),
                          (foreign_run, 'runs[0].values is missing or not an object')):
        planned.manifest_path.write_text(text)
        with pytest.raises(UsageError) as refused:
            manifest.read_manifest(planned.directory)
        assert str(refused.value) == (f'{planned.manifest_path}: not a sweep.json written by `ttm-distill sweep` '
                                      f'({problem})')


def test_a_metrics_file_is_named_after_the_run_log_or_else_the_checkpoint():
    assert metrics.metrics_path(Path('runs/a/run.log')) == Path('runs/a/run.metrics.jsonl')
    assert metrics.metrics_path(Path('ckpt/student.pt')).name == 'student' + metrics.SUFFIX
