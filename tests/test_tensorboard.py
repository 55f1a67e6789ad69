"""`ttm-distill train --tensorboard DIR`: per-epoch curves, and one line when tensorboard is missing."""
import json

import pytest
from conftest import TINY, cli, cli_env, run_cli


def test_train_writes_every_epoch_metric_as_a_curve(tmp_path):
    pytest.importorskip('tensorboard')
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from ttm_torchdistill.losses import WTTMLoss
    from ttm_torchdistill.runner.tensorboard import TAGS

    result = cli(['train', TINY, '--device', 'cpu', '--seed', '0', '--set', 'train.num_epochs=3', '--no-test',
                      '--run-log', 'run.log', '--tensorboard', 'tb', '--summary', 's.json'], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [json.loads(line) for line in (tmp_path / 'run.metrics.jsonl').read_text().splitlines()]
    events = EventAccumulator(str(tmp_path / 'tb'))
    events.Reload()
    tags = {**TAGS, **{name: f'diagnostics/{name}' for name in WTTMLoss.diagnostic_names}}  # the loss's own parts
    assert sorted(events.Tags()['scalars']) == sorted(tags.values())
    for key, tag in tags.items():
        curve = events.Scalars(tag)
        assert [e.step for e in curve] == [1, 2, 3], tag
        assert [e.value for e in curve] == pytest.approx([r[key] for r in records], rel=1e-6), tag
    summary = json.loads((tmp_path / 's.json').read_text())
    assert summary['student_test_top1'] is None  # --no-test


def test_without_tensorboard_the_flag_says_how_to_install_it(tmp_path):
    blocker = tmp_path / 'blocker' / 'tensorboard'
    blocker.mkdir(parents=True)
    (blocker / '__init__.py').write_text("raise ImportError('blocked for this test')\n")
    env = cli_env()
    env['PYTHONPATH'] = f'{blocker.parent}:{env["PYTHONPATH"]}'
    result = run_cli(['train', TINY, '--device', 'cpu', '--tensorboard', 'tb'], tmp_path, env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "ttm-distill: error: --tensorboard: the tensorboard package is not installed "
        "(pip install 'ttm-torchdistill[tensorboard]')"]
    assert list(tmp_path.iterdir()) == [tmp_path / 'blocker']  # refused before anything (lock, checkpoints) is made
