"""`ttm-distill sweep --launcher slurm` on the real two-node test cluster, interrupted: tasks requeued and signalled,
and a lockstep group requeued, resume and match undisturbed sweeps (a file of its own, beside the other SLURM sweep
tests, so that `make test` runs them in parallel)."""
import json
import time

import pytest
import torch
from conftest import TINY, assert_same_run, ckpt_weights, cli, ok, run_cli, train_alone
from test_sweep_slurm import SLURM, cluster_env

pytest.importorskip('submitit')


def test_requeued_and_usr2_signalled_tasks_resume_and_match_an_undisturbed_sweep(tmp_path, slurm_cluster):
    # 384 iterations per epoch, 4 epochs: a run keeps training for a while after its first checkpoint
    args = ['sweep', TINY, '--grid', 'gamma=0.5,0.8', '--seeds', '0', '-o', 'out',
            '--set', 'train.num_epochs=4', '--set', 'datasets.blobs/train.init.kwargs.size=3072']
    (tmp_path / 'slurm').mkdir(), (tmp_path / 'local').mkdir()
    env = cluster_env(slurm_cluster)
    result = ok(run_cli([*args, *SLURM, '--slurm', f'partition={slurm_cluster.partition}'], tmp_path / 'slurm',
                         env=env))
    assert 'watch it: squeue -j' in result.stdout
    out = tmp_path / 'slurm' / 'out'
    job_id = json.loads((out / 'sweep.json').read_text())['slurm']['job_id']
    # task 0: requeued by the administrator; task 1: the USR2 that SLURM sends before the time limit
    disturb = {0: ('scontrol', 'requeue', f'{job_id}_0'), 1: ('scancel', '--signal=USR2', f'{job_id}_1')}
    points = {0: out / 'gamma0.5/seed0', 1: out / 'gamma0.8/seed0'}
    deadline = time.monotonic() + 180
    while disturb:
        for task in list(disturb):
            if (points[task] / 'student.last.pt').is_file():
                assert not (points[task] / 'summary.json').exists(), 'the run ended before it could be disturbed'
                slurm_cluster.run(*disturb.pop(task))
        assert time.monotonic() < deadline, slurm_cluster.log_tails()
        time.sleep(0.05)
    slurm_cluster.wait_for(job_id, timeout=240)
    for task, run_dir in points.items():
        assert (run_dir / 'summary.json').is_file(), (run_dir / 'output.log').read_text()[-3000:]
        log = (run_dir / 'run.log').read_text()
        assert 'resumed from' in log, (task, log[-2000:])
        assert not (run_dir / 'error.txt').exists()
    assert 'Requeued job' in ''.join(p.read_text() for p in (out / 'slurm').glob(f'{job_id}_1_*_log.*'))
    ok(run_cli(args, tmp_path / 'local', env=env, timeout=300))
    for run_dir in points.values():
        reference = tmp_path / 'local' / 'out' / run_dir.relative_to(out)
        mine, theirs = ckpt_weights(run_dir / 'student.last.pt'), ckpt_weights(reference / 'student.last.pt')
        assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    rows = json.loads(ok(cli(['table', out, '--format', 'json'], tmp_path)).stdout)['rows']
    assert all(r['finished'] == 1 for r in rows)


def test_a_lockstep_sweep_is_one_task_per_group_and_a_requeued_group_resumes_every_point(tmp_path, slurm_cluster,
                                                                                       monkeypatch):
    args = ['sweep', TINY, '--grid', 'gamma=0.5,0.8', '--seeds', '0', '1', '-o', 'out', '--lockstep',
            '--set', 'train.num_epochs=3', '--set', 'datasets.blobs/train.init.kwargs.size=2048', *SLURM,
            '--slurm', f'partition={slurm_cluster.partition}']
    env = cluster_env(slurm_cluster)
    dry = ok(run_cli([*args, '--dry-run'], tmp_path, env=env))
    assert 'one job array of 2 task(s), one lockstep group each' in dry.stdout
    assert 'lockstep group seed1 (2 runs: gamma0.5, gamma0.8)' in dry.stdout
    ok(run_cli(args, tmp_path, env=env))
    out = tmp_path / 'out'
    manifest = json.loads((out / 'sweep.json').read_text())
    job_id = manifest['slurm']['job_id']
    assert manifest['slurm']['tasks'] == {f'{job_id}_0': ['gamma0.5/seed0', 'gamma0.8/seed0'],
                                          f'{job_id}_1': ['gamma0.5/seed1', 'gamma0.8/seed1']}
    first = out / 'gamma0.8/seed0'  # the group's second run: its first checkpoint comes after the first run's
    deadline = time.monotonic() + 180
    while not (first / 'student.last.pt').is_file():
        assert time.monotonic() < deadline, slurm_cluster.log_tails()
        time.sleep(0.05)
    assert not (first / 'summary.json').exists(), 'the group ended before it could be requeued'
    slurm_cluster.run('scontrol', 'requeue', f'{job_id}_0')
    slurm_cluster.wait_for(job_id, timeout=240)
    manifest = json.loads((out / 'sweep.json').read_text())
    monkeypatch.setenv('OMP_NUM_THREADS', '1')  # the tasks' arithmetic
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for entry in manifest['runs']:
            run_dir = out / entry['dir']
            assert (run_dir / 'summary.json').is_file(), (run_dir / 'output.log').read_text()[-3000:]
            assert ('resumed from' in (run_dir / 'run.log').read_text()) == (entry['seed'] == 0)
            assert_same_run(run_dir, train_alone(entry, tmp_path / 'alone'), entry['ckpt'])
    finally:
        torch.set_num_threads(threads)
    table = ok(cli(['table', out], tmp_path)).stdout
    assert 'lockstep group seed0: gamma0.5, gamma0.8' in table and 'lockstep group seed1: gamma0.5, gamma0.8' in table
