"""The CIFAR-100 page's and the sweeps page's walkthroughs of one pair run as written (a file of their own, so that
`make test` runs them beside the other walkthroughs): the teacher and five seeds with the table, and a table row
of five recipes as one lockstep sweep. How blocks are found and shortened: tests/test_doc_commands.py."""
import json
import shutil

from doc_blocks import block
from test_doc_commands import run_blocks


def test_cifar100_teacher_then_five_seeds_then_the_table(tmp_path, shell_env):
    """The CIFAR-100 page's teacher and five seeds; the README's recipe example is the same two blocks."""
    teacher, loop = block('cifar100_teacher'), block('cifar100_five_seeds')
    assert block('readme_one_recipe') == teacher + loop
    work = tmp_path / 'work'
    result = run_blocks([teacher, loop], work, shell_env)
    summaries = sorted(work.glob('runs/wttm-r8x4/seed*/summary.json'))
    assert len(summaries) == 5
    assert {json.loads(p.read_text())['kind'] for p in summaries} == {'train'}
    table = result.stdout.strip().splitlines()
    row = next(line for line in table if line.startswith('| cifar100/wttm/resnet8x4_from_resnet32x4 '))
    assert '| 5 |' in row.replace('  ', ' ') and '76.06' in row  # five runs beside the paper's WTTM number


def test_a_table_row_of_one_pair_is_one_sweep(tmp_path, shell_env, teacher_ckpts):
    """The sweeps page's row of five recipes with three seeds, the teacher where `train cifar100/ce/resnet56` puts it
    (a generated one): one lockstep group per seed (the recipes differ only in their loss), and the table beside
    each recipe's paper number."""
    work = tmp_path / 'work'
    teacher = work / 'resource/ckpt/cifar100/ce/cifar100-resnet56.pt'
    teacher.parent.mkdir(parents=True)
    shutil.copy(teacher_ckpts('resnet56'), teacher)
    result = run_blocks([block('table_row_sweep')], work, shell_env)
    manifest = json.loads((work / 'row' / 'sweep.json').read_text())
    assert [r['label'] for r in manifest['recipes']] == ['kd', 'ttm', 'wttm', 'dist', 'dkd']
    assert len(manifest['runs']) == 15 and all(r['state'] == 'finished' for r in manifest['runs'])
    assert len({r['group'] for r in manifest['runs']}) == 3  # one lockstep group per seed
    table = result.stdout[result.stdout.rindex('sweep row (5 recipes of one pair, seeds 0 1 2)'):]  # `table row`
    for label, paper in (('kd', '70.66'), ('ttm', '71.83'), ('wttm', '71.92'), ('dist', '71.75'), ('dkd', '71.97')):
        (line,) = [x for x in table.splitlines() if x.startswith(f'| {label} |')]
        assert line.startswith(f'| {label} | 3/3 | 0 |') and f'| {paper} |' in line, line
