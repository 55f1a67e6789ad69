"""`ttm-distill sweep --launcher slurm` on the real two-node SLURM cluster of the `slurm_cluster` fixture."""
import json
import subprocess
import sys

import pytest
from conftest import TINY, cli, cli_env, ok, run_cli
from test_sweep_row import tiny_recipe

pytest.importorskip('submitit')

SLURM = ['--launcher', 'slurm', '--parallel', '2', '--slurm', 'cpus_per_task=1', '--slurm', 'time=10']


def cluster_env(cluster):
    # one thread per run: identical arithmetic under SLURM and in the local reference sweep
    return cli_env(SLURM_CONF=cluster.conf, OMP_NUM_THREADS=1)


def test_a_2x2_sweep_is_one_throttled_array_and_the_table_is_right(tmp_path, slurm_cluster):
    args = ['sweep', TINY, '--grid', 'gamma=0.5,0.8', '--grid', 'beta=1,2', '--seeds', '0', '-o', 'out', *SLURM,
            '--slurm', f'partition={slurm_cluster.partition}']
    dry = ok(run_cli([*args, '--dry-run'], tmp_path, env=cluster_env(slurm_cluster)))
    assert 'one job array of 4 task(s)' in dry.stdout and 'array_parallelism=2' in dry.stdout
    assert not (tmp_path / 'out').exists()
    result = ok(run_cli([*args, '--wait'], tmp_path, env=cluster_env(slurm_cluster), timeout=300))
    out = tmp_path / 'out'
    manifest = json.loads((out / 'sweep.json').read_text())
    job_id = manifest['slurm']['job_id']
    assert f'submitted SLURM job array {job_id}: 4 task(s), at most 2 at a time' in result.stdout
    assert sorted(manifest['slurm']['tasks']) == [f'{job_id}_{i}' for i in range(4)]
    script = (out / 'slurm' / f'{job_id}_submission.sh').read_text()
    assert '#SBATCH --array=0-3%2' in script and '#SBATCH --cpus-per-task=1' in script
    assert 'ArrayTaskThrottle=2' in slurm_cluster.run('scontrol', 'show', 'job', job_id).stdout
    assert [e['state'] for e in manifest['runs']] == ['finished'] * 4
    scores = {p.parent.parent.name: json.loads(p.read_text())['best_val_top1']
              for p in out.glob('*/seed0/summary.json')}
    assert len(scores) == 4
    rows = json.loads(ok(cli(['table', out, '--format', 'json'], tmp_path)).stdout)['rows']
    grid_order = [e['point'] for e in manifest['runs']]  # ties keep the grid's order
    assert [r['point'] for r in rows] == sorted(grid_order, key=lambda p: -scores[p])
    assert [r['val_top1_mean'] for r in rows] == [scores[r['point']] for r in rows]
    assert all(r['finished'] == 1 and r['failed'] == 0 for r in rows)
    assert '[4/4]' in result.stdout and '| * |' in result.stdout


def test_a_grid_point_can_be_a_distributed_job_over_two_nodes(tmp_path, slurm_cluster, monkeypatch):
    """--nodes 2: each array task is a job of two ranks, one a node, trained as `train --launcher slurm` trains."""
    args = ['sweep', TINY, '--grid', 'gamma=0.8', '--seeds', '0', '-o', 'out', '--set', 'train.num_epochs=2', *SLURM,
            '--nodes', '2']
    env = cluster_env(slurm_cluster)
    monkeypatch.setenv('SLURM_CONF', str(slurm_cluster.conf))
    dry = ok(cli([*args, '--dry-run'], tmp_path))
    assert 'one job array of 1 task(s), each 2 ranks (2 node(s) x 1, CPU ranks, Gloo)' in dry.stdout
    assert 'nodes=2 ntasks_per_node=1' in dry.stdout
    refused = cli([*args, '--lockstep'], tmp_path)
    assert refused.returncode == 2 and '--lockstep with jobs of 2 ranks' in refused.stderr, refused.stderr
    result = ok(run_cli([*args, '--wait'], tmp_path, env=env, timeout=300))
    assert '[1/1] gamma=0.8 seed 0: best val top-1' in result.stdout
    run_dir = tmp_path / 'out/gamma0.8/seed0'
    assert json.loads((run_dir / 'summary.json').read_text())['world_size'] == 2
    assert 'world size 2 on 1 host(s); global batch 16 = 8 per process x 2' in (run_dir / 'run.log').read_text()


def test_several_recipes_are_one_array_with_a_task_per_run(tmp_path, slurm_cluster):
    kd = tiny_recipe(tmp_path / 'recipes', 'kd', 50.0, kd=True)
    args = ['sweep', TINY, kd, '--seeds', '0', '-o', 'out', '--set', 'train.num_epochs=1', *SLURM,
            '--slurm', f'partition={slurm_cluster.partition}', '--wait']
    result = ok(run_cli(args, tmp_path, env=cluster_env(slurm_cluster), timeout=300))
    manifest = json.loads((tmp_path / 'out/sweep.json').read_text())
    job_id = manifest['slurm']['job_id']
    assert manifest['slurm']['tasks'] == {f'{job_id}_0': 'tiny_recipe/seed0', f'{job_id}_1': 'kd/seed0'}
    assert [(e['dir'], e['state']) for e in manifest['runs']] == [('tiny_recipe/seed0', 'finished'),
                                                                  ('kd/seed0', 'finished')]
    assert '| kd | 1/1 | 0 |' in result.stdout and '| 50.00 |' in result.stdout


def test_without_submitit_the_slurm_launcher_says_how_to_install_it(tmp_path):
    blocker = tmp_path / 'blocker'
    blocker.mkdir()
    (blocker / 'submitit.py').write_text("raise ImportError('blocked for this test')\n")
    env = cli_env()
    env['PYTHONPATH'] = f'{blocker}:{env["PYTHONPATH"]}'
    result = subprocess.run([sys.executable, '-m', 'ttm_torchdistill', 'sweep', str(TINY), '--grid', 'gamma=0.5',
                             '-o', 'out', '--launcher', 'slurm'], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "ttm-distill: error: --launcher slurm needs submitit, which is not installed "
        "(pip install 'ttm-torchdistill[slurm]')")
    assert not (tmp_path / 'out').exists()
