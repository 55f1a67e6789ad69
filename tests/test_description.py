"""A run description is what the command line parses, what a sweep keeps in its manifest and what it starts a run
with: its command line parses back to the same description."""
import json
import shlex

import pytest
from conftest import TINY, cli

from ttm_torchdistill.cli import build_parser
from ttm_torchdistill.description import Override, RunDescription
from ttm_torchdistill.errors import UsageError
from ttm_torchdistill.formats.manifest import read_manifest


def _parsed(argv: list[str]) -> RunDescription:
    from ttm_torchdistill.cli import _options

    return _options(build_parser().parse_args(argv))


@pytest.mark.parametrize('description', [
    RunDescription('cifar100/wttm/resnet8x4_from_resnet32x4'),
    RunDescription('r.yaml', ('a.b=1', 'c.d=[1, 2]', 'e={x: 1}'), seed=3, run_log='l.log', summary='s.json',
                   test=False, tensorboard='tb', amp='bf16', channels_last=True, compile='default', device='cpu'),
    RunDescription('r.yaml', ('a=x=y',), resume=True, allow_recipe_change=True, check=True, debug=True),
    RunDescription('r.yaml', command='test', amp='fp16', compile='reduce-overhead'),
])
def test_its_command_line_parses_back_to_it(description):
    assert _parsed(description.argv()) == description
    assert RunDescription.from_json(json.loads(json.dumps(description.to_json()))) == description


def test_overrides_split_at_the_first_equals_sign_and_refuse_a_bad_key():
    assert Override.parse('a.b=c=d') == Override('a.b', 'c=d') and str(Override('a.b', 'c=d')) == 'a.b=c=d'
    assert Override.parse('a.b=c=d').keys == ['a', 'b']
    for bad in ('a.b', '=1', 'a..b=1'):
        with pytest.raises(UsageError, match='expected KEY=VALUE'):
            Override.parse(bad)


def test_a_sweep_keeps_each_runs_description_and_starts_the_run_it_describes(tmp_path):
    result = cli(['sweep', TINY, '--grid', 'gamma=0.5', '--seeds', '7', '--set', 'train.num_epochs=1', '-o', 'out'],
                 tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (entry,) = read_manifest(tmp_path / 'out')['runs']
    run = RunDescription.from_json(entry['run'])
    assert run.seed == 7 and not run.test and run.run_log == str(tmp_path / 'out/gamma0.5/seed7/run.log')
    assert 'train.criterion.kwargs.sub_terms.wttm.criterion.kwargs.gamma=0.5' in run.override_texts
    assert entry['command'] == shlex.join(['ttm-distill', *run.argv()])
    summary = json.loads((tmp_path / 'out/gamma0.5/seed7/summary.json').read_text())
    assert summary['overrides'] == run.override_texts and summary['seed'] == 7  # the run that ran is the one kept
