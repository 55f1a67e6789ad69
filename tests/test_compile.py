"""train --compile: torch.compile of student and teacher on CPU, losses within a tolerance of eager, resumable."""
import json

import pytest
import torch
from conftest import TINY, ckpt_weights, straight_and_resumed
from torch._dynamo.utils import counters
from torchdistill.common.main_util import load_ckpt

from ttm_torchdistill import cli
from ttm_torchdistill.description import RunDescription
from ttm_torchdistill.losses import TTMLoss
from ttm_torchdistill.runner import run_train
from ttm_torchdistill.runner.compiled import COMPILE_MODES

RTOL, ATOL = 1e-4, 1e-6
"""compiled vs eager: the stated tolerance (inductor fuses and reorders float32 sums; two epochs of 4 steps)"""


def _metrics(folder):
    return [json.loads(line) for line in (folder / 's.metrics.jsonl').read_text().splitlines()]


@pytest.fixture
def fresh_dynamo():
    yield
    torch._dynamo.reset()


def test_compiled_channels_last_run_matches_eager_and_resumes_with_plain_checkpoint_keys(tmp_path, fresh_dynamo):
    """Eager for 2 epochs vs --compile --channels-last for 1 epoch, then --resume --compile for the second."""

    def train(stage, folder):
        if stage == 'interrupted':
            counters.clear()
        compiled = {} if stage == 'straight' else {'compile': 'default', 'channels_last': True}
        epochs = 1 if stage == 'interrupted' else 2
        return run_train(RunDescription(recipe=TINY, overrides=[f'models.student_model.dst_ckpt={folder}/s.pt',
                                                                f'train.num_epochs={epochs}'],
                                        device='cpu', seed=0, quiet=True, test=False, resume=stage == 'resumed',
                                        **compiled))

    summary = straight_and_resumed(tmp_path, train, folders=('eager', 'compiled')).results['resumed']
    assert summary['epochs_run'] == 1
    assert counters['stats']['unique_graphs'] >= 3  # teacher, student training and evaluation were compiled
    eager, compiled = _metrics(tmp_path / 'eager'), _metrics(tmp_path / 'compiled')
    assert [m['epoch'] for m in compiled] == [1, 2]
    for e, c in zip(eager, compiled, strict=True):
        for key in ('train_loss', *TTMLoss.diagnostic_names):
            assert c[key] == pytest.approx(e[key], rel=RTOL, abs=ATOL), (e['epoch'], key)
        assert c['val_top1'] == e['val_top1']
    a, b = (ckpt_weights(tmp_path / f / 's.last.pt') for f in ('eager', 'compiled'))
    assert list(a) == list(b) and not any('_orig_mod' in k for k in b)  # the un-compiled module's keys
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=RTOL, atol=ATOL)
    from tiny import tiny_cnn

    model = tiny_cnn(num_classes=4, batch_norm=False)
    load_ckpt(str(tmp_path / 'compiled' / 's.pt'), model=model, strict=True)  # torchdistill's loader, strictly


def test_compile_flag_takes_an_optional_mode_on_train_and_test():
    parser = cli.build_parser()
    assert cli.COMPILE_MODES == COMPILE_MODES
    assert parser.parse_args(['train', 'r.yaml', '--compile']).compile == 'default'
    assert parser.parse_args(['train', 'r.yaml', '--compile', 'reduce-overhead']).compile == 'reduce-overhead'
    assert parser.parse_args(['test', 'r.yaml', '--compile']).compile == 'default'
    assert parser.parse_args(['train', 'r.yaml']).compile is None
    assert cli._options(parser.parse_args(['train', 'r.yaml', '--compile'])).compile == 'default'


def test_a_bad_compile_mode_is_one_line(capsys):
    assert pytest.raises(SystemExit, cli.main, ['train', 'r.yaml', '--compile', 'fast']).value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "argument --compile: invalid choice: 'fast'" in err[0]
