"""`ttm-distill sweep` of several recipes of one teacher-student pair (a table row): each recipe's runs in a folder of
its own, the table by recipe beside the paper's numbers, lockstep across recipes that differ only in their loss, and
the refusals of recipes that are not one pair."""
import json

import pytest
from conftest import FAST, RECIPES, TINY, assert_same_run, cli, ok, one_error_line, train_alone
from test_lockstep import one_thread  # noqa: F401  (a fixture)

from ttm_torchdistill.formats.manifest import read_manifest
from ttm_torchdistill.formats.metrics import read_records
from ttm_torchdistill.sweep.folder import check_directory, save_manifest
from ttm_torchdistill.sweep.plan import plan_sweep

METHODS = ('kd', 'ttm', 'wttm', 'dist', 'dkd')
ROW = [f'cifar100/{m}/resnet8x4_from_resnet32x4' for m in METHODS]
PAPER = {'kd': 73.33, 'ttm': 76.17, 'wttm': 76.06, 'dist': 76.31, 'dkd': 76.32}
"""the shipped recipes' paper.top1"""
KD_TERM = '''        kd:
          criterion:
            key: 'KDLoss'
            kwargs:
              student_module_path: '.'
              student_module_io: 'output'
              teacher_module_path: '.'
              teacher_module_io: 'output'
              temperature: 4.0
              alpha: 0.5
              beta: 0.5
          weight: 1.0
'''


def _sets(overrides):
    return [a for o in overrides for a in ('--set', o)]


def tiny_recipe(folder, name, paper, kd=False, **replace):
    """A copy of the tiny recipe as ``folder/name.yaml`` with ``paper.top1``, its WTTM term swapped for KD (``kd``)
    and texts replaced (``replace``: old -> new)."""
    text = TINY.read_text()
    if kd:
        start = text.index('        wttm:\n')
        text = text[:start] + KD_TERM + text[text.index('\ntest:\n'):]
    for old, new in replace.items():
        text = text.replace(old, new)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f'{name}.yaml'
    path.write_text(f'paper:\n  top1: {paper}\n' + text)
    return path


@pytest.mark.usefixtures('one_thread')
def test_a_row_of_shipped_recipes_trains_in_one_lockstep_group_each_as_it_would_alone(tmp_path, cifar100_env,
                                                                                      teacher_ckpts):
    """KD, TTM, WTTM, DIST (CE + DIST, a term with a wrapper) and DKD (CE + DKD, warmed up over the epochs by the
    pre-epoch process) share one loader and one teacher forward; each builds its own loss and equals its training
    alone bit for bit. The table shows a row per recipe beside the paper's number."""
    sets = [*FAST, 'train.num_epochs=2', f'models.teacher_model.src_ckpt={teacher_ckpts("resnet32x4")}']
    result = ok(cli(['sweep', *ROW, '--seeds', '0', '-o', 'row', '--lockstep', *_sets(sets)], tmp_path))
    assert '5 of 5 run(s) to do in 1 lockstep group(s)' in result.stdout and 'note: --lockstep' not in result.stdout
    out = tmp_path / 'row'
    manifest = json.loads((out / 'sweep.json').read_text())
    assert [(e['recipe'], e['point'], e['dir'], e['state'], e['group']) for e in manifest['runs']] == [
        (m, m, f'{m}/seed0', 'finished', 'seed0') for m in METHODS]
    assert [(r['label'], r['recipe'], r['paper_top1']) for r in manifest['recipes']] == [
        (m, r, PAPER[m]) for m, r in zip(METHODS, ROW, strict=True)]
    assert 'lockstep group seed0: kd, ttm, wttm, dist, dkd' in result.stdout
    assert '[dkd/seed0] epoch 2/2  val top-1' in (out / 'lockstep/seed0.log').read_text()
    for entry in manifest['runs']:
        assert_same_run(out / entry['dir'], train_alone(entry, tmp_path / 'alone'), entry['ckpt'])
    records = {m: read_records(out / m / 'seed0/run.metrics.jsonl') for m in METHODS}
    assert [r['warmup'] for r in records['dkd']] == [pytest.approx(1 / 20), pytest.approx(2 / 20)]  # its own epochs
    assert 'u_gamma' in records['ttm'][0] and 'u_gamma' not in records['kd'][0] and 'tckd' not in records['wttm'][0]
    table = ok(cli(['table', out, '--format', 'json'], tmp_path))
    rows = json.loads(table.stdout)['rows']
    assert [(r['recipe'], r['finished'], r['paper_top1'], r['best']) for r in rows] == [
        (m, 1, PAPER[m], False) for m in METHODS]
    for row, entry in zip(rows, manifest['runs'], strict=True):
        assert row['val_top1_mean'] == entry['best_val_top1'] and row['val_top1_std'] == 0.0
        assert row['diff'] == pytest.approx(entry['best_val_top1'] - PAPER[row['recipe']])
        assert row["command"] == f"ttm-distill train {ROW[METHODS.index(row['recipe'])]} " + " ".join(_sets(sets))
    markdown = ok(cli(['table', out], tmp_path)).stdout
    assert '| recipe | finished | failed | val top-1 (mean +- std) | paper top-1 | diff |' in markdown
    assert f'| dkd | 1/1 | 0 | {rows[4]["val_top1_mean"]:.2f} +- 0.00 | 76.32 | {rows[4]["diff"]:+.2f} |' in markdown
    assert 'kd: cifar100/kd/resnet8x4_from_resnet32x4' in markdown.splitlines()


def test_several_recipe_files_with_a_grid_get_a_folder_each_and_more_seeds_continue_the_sweep(tmp_path):
    folder = tmp_path / 'recipes'
    wttm, kd = tiny_recipe(folder, 'tiny_wttm', 60.0), tiny_recipe(folder, 'tiny_kd', 55.5, kd=True)
    args = ['sweep', wttm, kd, '--grid', 'beta=2', '-o', 'out', '--parallel', '2', '--seeds', '0']
    first = ok(cli(args, tmp_path))
    assert '2 of 2 run(s) to do' in first.stdout and 'tiny_kd beta=2 seed 0: best val top-1' in first.stdout
    out = tmp_path / 'out'
    manifest = read_manifest(out)
    assert [(e.recipe, e.point, e.dir, e.state) for e in manifest.runs] == [
        ('tiny_wttm', 'tiny_wttm/beta2', 'tiny_wttm/beta2/seed0', 'finished'),
        ('tiny_kd', 'tiny_kd/beta2', 'tiny_kd/beta2/seed0', 'finished')]
    assert [r.keys for r in manifest.recipes] == [('train.criterion.kwargs.sub_terms.wttm.criterion.kwargs.beta',),
                                                  ('train.criterion.kwargs.sub_terms.kd.criterion.kwargs.beta',)]
    rows = json.loads(ok(cli(['table', out, '--format', 'json'], tmp_path)).stdout)['rows']
    assert [(r['recipe'], r['values'], r['finished'], r['paper_top1'], r['best']) for r in rows] == [
        ('tiny_wttm', {'beta': '2'}, 1, 60.0, True), ('tiny_kd', {'beta': '2'}, 1, 55.5, True)]
    assert rows[1]['command'] == f'ttm-distill train {kd} --set {manifest.recipes[1].keys[0]}=2'
    markdown = ok(cli(['table', out], tmp_path)).stdout
    assert '| recipe | best | beta | finished | failed | val top-1 (mean +- std) | paper top-1 | diff |' in markdown
    assert f'| tiny_kd | * | 2 | 1/1 | 0 | {rows[1]["val_top1_mean"]:.2f} +- 0.00 | 55.50 | ' in markdown
    assert f'best of tiny_kd: beta=2 (validation top-1 {rows[1]["val_top1_mean"]:.2f} +-' in markdown
    grown = ok(cli(['sweep', kd, wttm, '--grid', 'beta=2', '-o', 'out', '--seeds', '1', '--dry-run'], tmp_path))
    assert 'the sweep grows from 2 to 4 runs' in grown.stdout  # the recipes in any order: the earlier sweep's
    states = [line.split()[:2] for line in grown.stdout.splitlines() if '/seed' in line.split(' ')[0]]
    assert states == [['tiny_wttm/beta2/seed0', 'finished'], ['tiny_wttm/beta2/seed1', 'pending'],
                      ['tiny_kd/beta2/seed0', 'finished'], ['tiny_kd/beta2/seed1', 'pending']]
    one_error_line(cli(['sweep', wttm, '--grid', 'beta=2', '-o', 'out'], tmp_path), 2,
                   f'-o {out} holds another sweep (different recipes); give another DIR')


@pytest.mark.parametrize('recipes, extra, fragments', [
    (['cifar100/kd/resnet8x4_from_resnet32x4', 'cifar100/kd/resnet20_from_resnet56'], [],
     ['recipes cifar100/kd/resnet8x4_from_resnet32x4 and cifar100/kd/resnet20_from_resnet56 are not one teacher-',
      "the student model key differs (models.student_model.key: 'resnet8x4' vs 'resnet20')"]),
    (['cifar100/wttm/shufflenetv1_cifar_from_resnet32x4', 'cifar100/kd/shufflenetv1_cifar_from_wrn_40_2'], [],
     ["the teacher model key differs (models.teacher_model.key: 'resnet32x4' vs 'wrn_40_2')"]),
    (['cifar100/kd/resnet8x4_from_resnet32x4', 'cifar100/ce/resnet8x4'], [],
     ["the teacher model key differs (models.teacher_model.key: 'resnet32x4' vs None)"]),
    (['cifar100/kd/resnet8x4_from_resnet32x4', 'cifar100/kd/resnet8x4_from_resnet32x4'], [],
     ['recipe cifar100/kd/resnet8x4_from_resnet32x4 given twice; give each recipe once']),
    (['cifar100/kd/resnet8x4_from_resnet32x4', str(RECIPES / 'cifar100/kd/resnet8x4_from_resnet32x4.yaml')], [],
     ['and cifar100/kd/resnet8x4_from_resnet32x4 are the same file']),
    (['cifar100/kd/resnet8x4_from_resnet32x4', 'cifar100/ttm/resnet8x4_from_resnet32x4'], ['--grid', 'gamma=0.2'],
     ['--grid gamma: ', '/cifar100/kd/resnet8x4_from_resnet32x4.yaml has no TTMLoss, WTTMLoss or ExactDISTLoss term']),
    (['cifar100/kd/resnet8x4_from_resnet32x4', 'cifar100/ttm/resnet8x4_from_resnet32x4'],
     ['--grid', 'train.optimizer.kwargs.lr=0.1', '--lockstep'],
     ['--lockstep: --grid train.optimizer.kwargs.lr is outside train.criterion']),
])
def test_recipes_that_are_not_one_pair_or_given_twice_are_refused_in_one_line(tmp_path, recipes, extra, fragments):
    one_error_line(cli(['sweep', *recipes, *extra, '-o', 'out'], tmp_path), 2, *fragments)
    assert not (tmp_path / 'out').exists()


def test_recipes_of_other_data_or_that_would_share_a_folder_are_refused(tmp_path):
    base = tiny_recipe(tmp_path / 'a', 'tiny', 50)
    other = tiny_recipe(tmp_path / 'a', 'val_trained', 50, **{'    dataset_id: *train': '    dataset_id: *val'})
    one_error_line(cli(['sweep', base, other, '-o', 'out'], tmp_path), 2,
                   "the training dataset differs (train.train_data_loader.dataset_id: 'blobs/train' vs 'blobs/val')")
    spaced, dashed = tiny_recipe(tmp_path / 'b', 'my kd', 50), tiny_recipe(tmp_path / 'b', 'my-kd', 50)
    one_error_line(cli(['sweep', spaced, dashed, '-o', 'out'], tmp_path), 2,
                   f'recipe {spaced} would get the folder DIR/', f'-b-my-kd/, as {dashed} would; rename or copy')
    assert not (tmp_path / 'out').exists()


def test_labels_tell_apart_recipes_of_one_method_and_avoid_the_sweep_s_own_folders(tmp_path):
    mine = tiny_recipe(tmp_path / 'mine', 'tiny_recipe', 50)
    lockstep = tiny_recipe(tmp_path / 'mine', 'lockstep', 50)
    sweep = plan_sweep([str(TINY), str(mine), str(lockstep)], [], [0], [], tmp_path / 'out')
    assert [r.label for r in sweep.recipes] == ['tests-tiny_recipe', 'mine-tiny_recipe', 'mine-lockstep']
    shipped = plan_sweep(['demo/kd', 'demo/wttm'], [], [0], [], tmp_path / 'out')
    assert [run.name for run in shipped.runs] == ['kd/seed0', 'wttm/seed0']


def test_lockstep_splits_recipes_that_need_more_than_another_loss_and_says_why(tmp_path, cifar100_env):
    recipes = [f'cifar100/{m}/resnet8x4_from_resnet32x4' for m in ('kd', 'crd', 'wttm', 'itrd')]
    result = ok(cli(['sweep', *recipes, '--seeds', '0', '-o', 'out', '--lockstep', '--dry-run',
                     '--set', 'models.teacher_model.src_ckpt=null'], tmp_path))
    notes = [line for line in result.stdout.splitlines() if line.startswith('note: --lockstep')]
    assert notes == ['note: --lockstep: the recipes train in 3 lockstep groups per seed (kd, wttm | crd | itrd): '
                     'recipes share a group only where they differ in train.criterion alone (crd differs from kd at '
                     'train.teacher.forward_proc; itrd differs from kd at train.student.wrapper)']
    assert 'lockstep group seed0.1 (2 runs: kd, wttm): ttm-distill lockstep' in result.stdout
    assert 'lockstep group seed0.2 (1 runs: crd)' in result.stdout and not (tmp_path / 'out').exists()


def test_the_slurm_launcher_takes_several_recipes_as_one_array(tmp_path):
    pytest.importorskip('submitit')
    kd = tiny_recipe(tmp_path / 'r', 'kd', 50, kd=True)
    result = ok(cli(['sweep', TINY, kd, '--seeds', '0', '1', '-o', 'out', '--launcher', 'slurm', '--dry-run',
                     '--lockstep'], tmp_path))
    assert 'slurm launcher: one job array of 2 task(s), one lockstep group each' in result.stdout
    assert f'lockstep group seed1 (2 runs: tiny_recipe, kd): ttm-distill lockstep {tmp_path / "out"} ' \
           'tiny_recipe/seed1 kd/seed1' in result.stdout
    assert not (tmp_path / 'out').exists()


def test_a_version_1_manifest_of_one_recipe_still_continues(tmp_path):
    """sweep.json as ttm-distill wrote it before several recipes: no recipes, no run's recipe, version 1."""
    sweep = plan_sweep(str(TINY), ['gamma=0.5,0.8'], [0], [], tmp_path / 'out')
    sweep.directory.mkdir()
    save_manifest(sweep)
    data = json.loads(sweep.manifest_path.read_text())
    data.update(version=1)
    del data['recipes'], data['identity']['recipes']
    for entry in data['runs']:
        del entry['recipe']
    sweep.manifest_path.write_text(json.dumps(data))
    old = read_manifest(sweep.directory)
    assert [(r.label, r.recipe, r.keys) for r in old.recipes] == [('', str(TINY), (data['grid'][0]['key'],))]
    again = plan_sweep(str(TINY), ['gamma=0.5,0.8'], [0, 1], [], tmp_path / 'out', earlier=check_directory)
    assert again.earlier is not None and [r.name for r in again.runs] == [
        'gamma0.5/seed0', 'gamma0.5/seed1', 'gamma0.8/seed0', 'gamma0.8/seed1']
    assert [r.directory for r in again.runs[::2]] == [tmp_path / 'out/gamma0.5/seed0', tmp_path / 'out/gamma0.8/seed0']
