"""The method registry: each method declared once, next to its loss; the command line, the sweep's short names,
`new-recipe`, `calibrate` and the docs' tables derive from it, and a new logit method (tests/toy_method.py: a loss
class and its declaration) is usable by every command without editing any other file of the package."""
import json
import re

import pytest
import torch
from conftest import ROOT, TINY, cli, ok, run_cli

from ttm_torchdistill.methods import LossHooks, feature_methods, hooked, logit_methods, methods, short_names

WTTM_TERM = ("        wttm:\n          criterion:\n            key: 'WTTMLoss'\n            kwargs:\n"
             '              gamma: 0.8\n              beta: 1.6\n              alpha: 1.0\n')
MSE_TERM = ("        mse:\n          criterion:\n            key: 'LogitMSELoss'\n            kwargs:\n"
            '              beta: 0.5\n              scale: 1.0\n')


def test_every_method_of_the_package_is_declared_with_its_loss():
    assert [m.name for m in methods()] == ['ttm', 'wttm', 'kd', 'dist', 'dkd', 'itrd', 'fitnet', 'at', 'vid', 'rkd',
                                           'pkt', 'crd', 'reviewkd']
    assert [m.name for m in logit_methods()] == ['ttm', 'wttm', 'kd', 'dist', 'dkd']
    for method in methods():
        assert method.loss_class is None or method.loss_class.method is method  # the metadata on the entry
        assert method.logit == (method.recipe_kwargs is not None)
    features = ['fitnet', 'at', 'vid', 'rkd', 'pkt']
    assert [m.name for m in methods() if m.separate_ce] == ['dist', 'dkd', *features]
    assert [m.name for m in feature_methods()] == features
    assert [m.default_weight for m in feature_methods()] == [100.0, 1000.0, 1.0, 1.0, 30000.0]  # the benchmark's -b
    assert short_names()['gamma'] == ('TTMLoss', 'WTTMLoss', 'ExactDISTLoss')
    # a feature method's beta is its term's weight (the benchmark's -b)
    assert short_names()['beta'] == ('TTMLoss', 'WTTMLoss', 'KDLoss', 'ExactDISTLoss', 'DKDLoss', 'HintLoss',
                                     'ExactATLoss', 'ExactVIDLoss', 'RKDLoss', 'PKTLoss')


def test_the_runner_asks_every_loss_through_one_protocol():
    from ttm_torchdistill.losses import DKDLoss, ITRDLoss, WTTMLoss

    dkd, itrd, wttm = DKDLoss(warmup_epochs=5), ITRDLoss('a', 'output', 'b', 'output', 4, 4, 1.01), WTTMLoss(gamma=0.5)
    assert [type(m).__name__ for m in hooked(torch.nn.Sequential(dkd, itrd))] == ['DKDLoss', 'ITRDLoss']
    assert (dkd.needs_epoch, dkd.needs_class_indices, itrd.min_batch_size, wttm.min_batch_size) == (True, True, 2, 1)
    assert hooked(torch.nn.CrossEntropyLoss()) == [] and not isinstance(torch.nn.MSELoss(), LossHooks)


def test_the_sweeps_page_short_name_table_is_the_registry():
    text = (ROOT / 'docs' / 'sweeps.md').read_text()
    table = text[text.index('| short name | reaches the parameter of |'):]
    rows = {}
    for line in table.splitlines()[2:]:
        if not line.startswith('|'):
            break
        names, owners = line.split('|')[1:3]
        for name in re.findall(r'`(\w+)`', names):
            rows[name] = tuple(re.findall(r'\b\w+Loss\b', owners))
    assert rows == short_names()


@pytest.fixture(scope='module')
def toy(tmp_path_factory):
    """The tiny recipe with the toy method's term, and a teacher checkpoint for new-recipe."""
    folder = tmp_path_factory.mktemp('toy')
    text = TINY.read_text()
    assert WTTM_TERM in text
    text = text.replace("  - name: 'tiny'\n", "  - name: 'tiny'\n  - name: 'toy_method'\n").replace(WTTM_TERM, MSE_TERM)
    text = text.replace("      batch_norm: True\n", "      batch_norm: True\n    src_ckpt:\n", 1)
    (folder / 'toy.yaml').write_text(text.replace('./ckpt/tiny/wttm/', './ckpt/tiny/mse/'))
    import tiny

    torch.save(tiny.tiny_cnn(num_classes=4, batch_norm=True).state_dict(), folder / 'teacher.pt')
    return folder


def test_a_new_logit_method_is_one_declaration_for_every_command(toy):
    """Each command in a process of its own, as a user runs it (the toy method stays out of the suite's registry)."""
    one = ['--set', 'train.num_epochs=1']
    ok(run_cli(['train', 'toy.yaml', '--device', 'cpu', '--summary', 'run.json', '--run-log', 'run.log', *one], toy))
    records = [json.loads(line) for line in (toy / 'run.metrics.jsonl').read_text().splitlines()]
    assert len(records) == 1 and 'logit_mse' in records[0]  # its diagnostics, through the protocol
    sweep = ok(run_cli(['sweep', 'toy.yaml', '--grid', 'scale=0.5,2', '--grid', 'beta=0.1', '--seeds', '0', *one,
                         '-o', 'sweep', '--lockstep'], toy))
    assert 'scale' in sweep.stdout and len(list((toy / 'sweep').glob('*/seed0/summary.json'))) == 2
    manifest = json.loads((toy / 'sweep' / 'sweep.json').read_text())
    assert {a['key'] for a in manifest['grid']} == {'train.criterion.kwargs.sub_terms.mse.criterion.kwargs.scale',
                                                    'train.criterion.kwargs.sub_terms.mse.criterion.kwargs.beta'}
    refused = run_cli(['sweep', 'toy.yaml', '--grid', 'scale=0', '--seeds', '0', '-o', 'bad'], toy)
    assert refused.returncode == 2 and 'scale=0 is invalid' in refused.stderr  # checked by building its class
    ok(run_cli(['new-recipe', '--from', 'toy.yaml', '--teacher', f'tiny_cnn:{toy / "teacher.pt"}', '--student',
                 'tiny_cnn', '--method', 'mse', '--beta', '2', '-o', 'new.yaml'], toy))
    new = (toy / 'new.yaml').read_text()
    assert "key: 'LogitMSELoss'" in new and 'beta: 2.0' in new and '# MSE: tiny_cnn from tiny_cnn' in new
    ok(run_cli(['train', 'new.yaml', '--device', 'cpu', '--check', '--set',
                 'models.student_model.dst_ckpt=./ckpt/new/student.pt'], toy))
    refused = run_cli(['new-recipe', '--from', 'toy.yaml', '--teacher', f'tiny_cnn:{toy / "teacher.pt"}',
                       '--student', 'tiny_cnn', '--method', 'mse', '--gamma', '2', '-o', 'x.yaml'], toy)
    assert refused.returncode == 2 and '--gamma: --method mse has no parameter it sets' in refused.stderr
    table = ok(cli(['table', 'run.json', 'sweep/'], toy))  # table and plot read files: no plugin needed
    assert 'toy.yaml' in table.stdout
    ok(cli(['plot', 'run.json', '-o', 'run.png'], toy))
    assert (toy / 'run.png').stat().st_size > 0
