"""`ttm-distill sweep --lockstep`: each seed's points train together in one process, sharing the training loader and
the teacher's forward, and each point's weights and files are what it gets trained alone."""
import json

import pytest
import torch
from conftest import FAST, TINY, assert_same_run, cli, ok, one_error_line, same_values, train_alone

from ttm_torchdistill.errors import UsageError
from ttm_torchdistill.runner.checkpoint import last_ckpt_path
from ttm_torchdistill.runner.lockstep import run_lockstep
from ttm_torchdistill.sweep import local
from ttm_torchdistill.sweep.folder import save_manifest
from ttm_torchdistill.sweep.jobs import plan_jobs
from ttm_torchdistill.sweep.plan import plan_sweep

LOSS = 'train.criterion.kwargs.sub_terms.wttm.criterion.kwargs'


@pytest.fixture
def one_thread(monkeypatch):
    """One torch thread here and in the sweep's processes: the same arithmetic in both."""
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _sets(overrides):
    return [a for o in overrides for a in ('--set', o)]


@pytest.mark.parametrize('recipe', ['cifar100/wttm/resnet20_from_resnet56', 'cifar100/wttm_crd/resnet20_from_resnet56'])
def test_each_point_of_a_lockstep_grid_is_bit_identical_to_training_ittrain_alone(recipe, tmp_path, cifar100_env,
                                                                             teacher_ckpts, one_thread):
    """A shipped recipe's 2 x 2 grid; with CRD every point keeps its own memory bank and embeddings."""
    sets = [*FAST, 'train.num_epochs=2', f'models.teacher_model.src_ckpt={teacher_ckpts("resnet56")}']
    args = ['sweep', recipe, '--grid', 'gamma=0.3,0.6', '--grid', 'beta=1,4', '--seeds', '0', '-o', 'out',
            '--lockstep', *_sets(sets)]
    result = ok(cli(args, tmp_path))
    manifest = json.loads((tmp_path / 'out/sweep.json').read_text())
    assert [(e['state'], e['group']) for e in manifest['runs']] == [('finished', 'seed0')] * 4
    assert '4 of 4 run(s) to do in 1 lockstep group(s)' in result.stdout
    assert 'lockstep group seed0: gamma0.3_beta1, gamma0.3_beta4, gamma0.6_beta1, gamma0.6_beta4' in result.stdout
    log = (tmp_path / 'out/lockstep/seed0.log').read_text()
    assert '[gamma0.6_beta4/seed0] epoch 2/2  val top-1' in log
    for entry in manifest['runs']:
        assert_same_run(tmp_path / 'out' / entry['dir'], train_alone(entry, tmp_path / 'alone'), entry['ckpt'])
    if 'crd' in recipe:
        aux = [torch.load(tmp_path / 'out' / e['dir'] / last_ckpt_path(e['ckpt']), weights_only=False)['aux']
               for e in manifest['runs']]
        assert {'loss.crd', 'student_wrapper', 'teacher_wrapper'} <= set(aux[0])
        assert not same_values(aux[0]['loss.crd'], aux[3]['loss.crd'])  # each point's own memory bank


def test_a_feature_methods_grid_trains_each_point_with_its_own_regressors_bit_identical_to_alone(
        tmp_path, cifar100_env, teacher_ckpts, one_thread):
    """VID's regressors and log-scales live in each point's student wrapper: a grid over the term's weight (`beta`)
    in one lockstep group equals each point trained alone, and the points' regressors differ."""
    sets = [*FAST, 'train.num_epochs=2', f'models.teacher_model.src_ckpt={teacher_ckpts("resnet56")}']
    args = ['sweep', 'cifar100/vid/resnet20_from_resnet56', '--grid', 'beta=1,4', '--seeds', '0', '-o', 'out',
            '--lockstep', *_sets(sets)]
    ok(cli(args, tmp_path))
    manifest = json.loads((tmp_path / 'out/sweep.json').read_text())
    assert [(e['state'], e['group']) for e in manifest['runs']] == [('finished', 'seed0')] * 2
    for entry in manifest['runs']:
        assert_same_run(tmp_path / 'out' / entry['dir'], train_alone(entry, tmp_path / 'alone'), entry['ckpt'])
    aux = [torch.load(tmp_path / 'out' / e['dir'] / last_ckpt_path(e['ckpt']), weights_only=False)['aux']
           for e in manifest['runs']]
    assert not same_values(aux[0]['student_wrapper'], aux[1]['student_wrapper'])


def test_a_student_with_dropout_is_bit_identical_too(tmp_path, one_thread):
    """The demo's digits CNN (dropout 0.2) as the student: each point's step draws its masks from the generator
    state it would have alone."""
    sets = ['models.teacher_model.src_ckpt=null', 'models.student_model.key=digits_cnn', 'train.num_epochs=2',
            'train.log_freq=20']
    args = ['sweep', 'demo/wttm', '--grid', 'gamma=0.25,0.5', '--grid', 'beta=1,2', '--seeds', '3', '-o', 'out',
            '--lockstep', *_sets(sets)]
    ok(cli(args, tmp_path))
    manifest = json.loads((tmp_path / 'out/sweep.json').read_text())
    assert [e['state'] for e in manifest['runs']] == ['finished'] * 4
    assert 'not bit-identical' not in (tmp_path / 'out/lockstep/seed3.log').read_text()
    for entry in manifest['runs']:
        assert_same_run(tmp_path / 'out' / entry['dir'], train_alone(entry, tmp_path / 'alone'), entry['ckpt'])


def test_a_diverging_point_stops_alone_as_it_would_alone_and_groups_follow_group_size(tmp_path, one_thread):
    args = ['sweep', TINY, '--grid', 'gamma=0.5,0.8', '--grid', 'beta=1,1.0e+300', '--seeds', '0', '-o', 'out',
            '--lockstep', '--group-size', '2']
    result = cli(args, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    runs = {e['point']: e for e in json.loads((tmp_path / 'out/sweep.json').read_text())['runs']}
    assert {p: (e['state'], e['group']) for p, e in runs.items()} == {
        'gamma0.5_beta1': ('finished', 'seed0.1'), 'gamma0.5_beta1.0e+300': ('failed', 'seed0.1'),
        'gamma0.8_beta1': ('finished', 'seed0.2'), 'gamma0.8_beta1.0e+300': ('failed', 'seed0.2')}
    assert 'lockstep group seed0.1: gamma0.5_beta1, gamma0.5_beta1.0e+300' in result.stdout
    alone = cli(['train', TINY, '--seed', '0', '--no-test', '--set', f'{LOSS}.gamma=0.5', '--set',
                 f'{LOSS}.beta=1.0e+300', '--set', 'models.student_model.dst_ckpt=alone/student.pt'], tmp_path)
    line = one_error_line(alone, 1, 'non-finite loss')
    failed = tmp_path / 'out/gamma0.5_beta1.0e+300/seed0'
    assert runs['gamma0.5_beta1.0e+300']['error'] == f'exit code 1: {line}'.replace(
        str(tmp_path / 'alone/student.last.pt'), str(failed / 'student.last.pt'))
    assert (failed / 'error.txt').read_text().strip() == runs['gamma0.5_beta1.0e+300']['error']
    assert not (failed / 'summary.json').exists()
    for point in ('gamma0.5_beta1', 'gamma0.8_beta1'):
        entry = runs[point]
        assert_same_run(tmp_path / 'out' / entry['dir'], train_alone(entry, tmp_path / 'alone'), entry['ckpt'])
    rerun = cli(args, tmp_path)  # the failed points are tried again, together
    assert '2 of 4 run(s) to do in 1 lockstep group(s)' in rerun.stdout
    assert 'lockstep group seed0: gamma0.5_beta1.0e+300, gamma0.8_beta1.0e+300' in rerun.stdout


def test_a_killed_group_resumes_every_point_and_equals_an_uninterrupted_one(tmp_path, monkeypatch, one_thread):
    """The group's process is killed (SIGKILL) in the first epoch's validations: two points have saved epoch 1, two
    have not. The same command resumes the first two from their .last.pt and starts the others afresh, as two
    sub-groups of one process; every point equals its uninterrupted training."""
    args = ['sweep', TINY, '--grid', 'gamma=0.5,0.8', '--grid', 'beta=1,2', '--seeds', '0', '-o', 'out',
            '--lockstep', '--set', 'train.num_epochs=3']
    monkeypatch.setenv('TINY_KILL_AT', '41')  # the 41st sample the shared validation set gives: member 3's pass
    killed = cli(args, tmp_path)
    monkeypatch.delenv('TINY_KILL_AT')
    assert killed.returncode == 1 and 'killed by signal 9' in killed.stdout, killed.stdout + killed.stderr
    out = tmp_path / 'out'
    manifest = json.loads((out / 'sweep.json').read_text())
    saved = {e['point']: torch.load(out / e['dir'] / 'student.last.pt', weights_only=False)['epoch']
             for e in manifest['runs'] if (out / e['dir'] / 'student.last.pt').is_file()}
    assert saved == {'gamma0.5_beta1': 1, 'gamma0.5_beta2': 1}
    resumed = ok(cli(args, tmp_path))
    assert '4 of 4 run(s) to do in 1 lockstep group(s)' in resumed.stdout
    for entry in json.loads((out / 'sweep.json').read_text())['runs']:
        folder = out / entry['dir']
        assert entry['state'] == 'finished'
        assert ('resumed from' in (folder / 'run.log').read_text()) == (entry['point'] in saved)
        assert_same_run(folder, train_alone(entry, tmp_path / 'alone'), entry['ckpt'])


def test_a_group_stopped_inside_an_epoch_resumes_every_point_exactly(tmp_path, monkeypatch, one_thread):
    """SIGUSR2 (SLURM's warning) reaches the group's process as the shared loader reads sample 45 (epoch 2, iteration
    2 of 4): every point stops after that step with its own mid-epoch checkpoint, the sweep counts them as
    interrupted (not failed), and the same command resumes the group there; every point equals its training
    alone."""
    args = ['sweep', TINY, '--grid', 'gamma=0.5,0.8', '--seeds', '0', '-o', 'out', '--lockstep',
            '--set', 'train.num_epochs=3']
    monkeypatch.setenv('TINY_SIGNAL_AT', '45')
    monkeypatch.setenv('TINY_SIGNAL_SIZE', '32')
    stopped = cli(args, tmp_path)
    monkeypatch.delenv('TINY_SIGNAL_AT')
    assert stopped.returncode == 75 and 'FAILED' not in stopped.stdout, stopped.stdout + stopped.stderr
    assert stopped.stdout.count('stopped with a resume checkpoint; the same command resumes it') == 2
    out = tmp_path / 'out'
    entries = json.loads((out / 'sweep.json').read_text())['runs']
    for entry in entries:
        ckpt = torch.load(out / entry['dir'] / 'student.last.pt', weights_only=False)
        assert (ckpt['epoch'], ckpt['position']['iteration']) == (1, 2), entry['point']
        assert not (out / entry['dir'] / 'error.txt').exists()
    ok(cli(args, tmp_path))
    for entry in json.loads((out / 'sweep.json').read_text())['runs']:
        folder = out / entry['dir']
        assert entry['state'] == 'finished'
        assert 'inside epoch 2, after iteration 2 of 4' in (folder / 'run.log').read_text()
        assert_same_run(folder, train_alone(entry, tmp_path / 'alone'), entry['ckpt'])


def test_the_progress_line_names_every_point_of_a_group(tmp_path, capsys):
    sweep = plan_sweep(str(TINY), ['gamma=0.5,0.8'], [0], [], tmp_path / 'out')
    job, = plan_jobs(sweep, True, None)
    assert job.group == 'seed0' and [r.group for r in sweep.runs] == ['seed0', 'seed0']
    assert [j.group for j in plan_jobs(sweep, False, None)] == [None, None]  # a later sweep without --lockstep
    assert [r.group for r in sweep.runs] == [None, None]
    local.LocalLauncher._progress({0: (None, job, 0.0, None)})
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(':')[0] for line in lines] == ['  running gamma=0.5 seed 0', '  running gamma=0.8 seed 0']
    assert job.argv() == ['lockstep', str(sweep.directory), 'gamma0.5/seed0', 'gamma0.8/seed0']


@pytest.mark.parametrize('extra, fragments', [
    (['--grid', 'train.optimizer.kwargs.lr=0.1,0.01', '--lockstep'],
     ['--lockstep: --grid train.optimizer.kwargs.lr is outside train.criterion', 'optimizer', 'without --lockstep']),
    (['--grid', 'datasets.blobs/train.init.kwargs.size=32,64', '--lockstep'],
     ['--grid datasets.blobs/train.init.kwargs.size is outside train.criterion']),
    (['--group-size', '2'], ['--group-size needs --lockstep']),
    (['--lockstep', '--group-size', '0'], ['--group-size 0: must be at least 1']),
])
def test_lockstep_refusals_are_one_line_and_create_nothing(tmp_path, capsys, extra, fragments):
    code = cli(['sweep', TINY, '--grid', 'gamma=0.5,0.8', '--seeds', '0', '-o', 'out', *extra], tmp_path)
    one_error_line(code, 2, *fragments)
    assert not (tmp_path / 'out').exists()


def test_dry_run_lists_the_groups(tmp_path):
    result = ok(cli(['sweep', TINY, '--grid', 'gamma=0.5,0.8', '--grid', 'beta=1,2', '--seeds', '0', '1',
                      '--lockstep', '--group-size', '3', '-o', 'out', '--dry-run'], tmp_path))
    assert 'local launcher: 1 lockstep group(s) at a time on CPU' in result.stdout
    assert 'lockstep group seed0.1 (3 runs: gamma0.5_beta1, gamma0.5_beta2, gamma0.8_beta1)' in result.stdout
    assert 'lockstep group seed1.2 (1 runs: gamma0.8_beta2): ttm-distill lockstep ' in result.stdout
    assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('runs, fragments', [
    (['lr0.1/seed0', 'lr0.01/seed0'], ['runs lr0.1/seed0 and lr0.01/seed0 differ at train.optimizer.kwargs.lr, '
                                       'outside train.criterion']),
    (['lr0.1/seed0', 'lr0.1/seed1'], ['runs lr0.1/seed0 and lr0.1/seed1 differ in their seed (0 vs 1)']),
    (['lr0.1/seed2'], ['has no run lr0.1/seed2']),
])
def test_the_lockstep_command_refuses_runs_that_cannot_share_a_group(tmp_path, runs, fragments):
    sweep = plan_sweep(str(TINY), ['train.optimizer.kwargs.lr=0.1,0.01'], [0, 1], [], tmp_path / 'out')
    sweep.directory.mkdir()
    save_manifest(sweep)
    one_error_line(cli(['lockstep', tmp_path / 'out', *runs], tmp_path), 2, *fragments)
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['sweep.json']


def test_a_lockstep_group_refuses_check_and_compile(tmp_path):
    sweep = plan_sweep(str(TINY), ['gamma=0.5,0.8'], [0], [], tmp_path / 'out')
    for change in ({'check': True}, {'compile': 'default'}):
        with pytest.raises(UsageError, match='without --check and --compile'):
            run_lockstep([r.description.replace(**change) for r in sweep.runs], [r.name for r in sweep.runs],
                         [None, None])
    assert not (tmp_path / 'out').exists()


def test_runs_per_gpu_packs_groups(tmp_path, monkeypatch, capsys):
    (tmp_path / 'probe').mkdir()
    monkeypatch.setattr(local, 'visible_gpus', lambda: ['7'])
    monkeypatch.setenv('GPU_PROBE_COMMAND', 'lockstep')  # tests/gpu_probe.py: each group's process records its GPUs
    monkeypatch.setenv('GPU_PROBE_DIR', str(tmp_path / 'probe'))
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    deps = 'dependencies=[{name: ttm_torchdistill}, {name: tiny}, {name: gpu_probe}]'
    result = ok(cli(['sweep', TINY, '--grid', 'gamma=0.5,0.8', '--seeds', '0', '1', '--set', deps, '--set',
                      'train.num_epochs=1', '-o', 'out', '--runs-per-gpu', '2', '--lockstep'], tmp_path))
    assert '4 of 4 run(s) to do in 2 lockstep group(s), 2 at a time, 2 per GPU' in result.stdout
    records = [json.loads(p.read_text()) for p in (tmp_path / 'probe').iterdir()]
    assert sorted(r['argv'][r['argv'].index('lockstep') + 2:] for r in records) == [
        ['gamma0.5/seed0', 'gamma0.8/seed0'], ['gamma0.5/seed1', 'gamma0.8/seed1']]
    assert [r['cuda'] for r in records] == ['7', '7']
    lines = result.stdout.splitlines()
    first_end = next(i for i, line in enumerate(lines) if line.startswith('[1/4]'))
    assert sum(line.startswith('started lockstep group') for line in lines[:first_end]) == 2
