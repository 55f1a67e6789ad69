"""`ttm-distill train --launcher slurm` on the test cluster's real slurmd daemons (tests/slurm_cluster.py, two
nodes): a job of 2 nodes x 1 task and one of 1 node x 2 tasks end with the weights of the same run under
`torchrun --nproc_per_node=2`, also when SLURM's warning (USR2) stops one mid-epoch and it requeues itself, and when
`scontrol requeue` restarts one; a killed rank fails the job in one line naming it, with the last checkpoint whole;
the run's lock covers the job; refusals come before anything is submitted."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import SAME_IN_CHECKPOINTS, TINY, _records, cli, cli_env, ok, run_cli, same_values

pytest.importorskip('submitit')

LAST = 'ckpt/tiny/wttm/student.last.pt'
SLOW = ['--set', 'train.num_epochs=6', '--set', 'datasets.blobs/train.init.kwargs={size: 32, seed: 0, delay: 0.08}']
"""6 epochs of 2 iterations a rank, 1.3 s each, nearly all of it in loading training batches (validation and the
epoch's end take a few ms): a signal sent as an epoch ends lands inside the next"""
RUN = ['train', str(TINY), '--seed', '0', '--run-log', 'run.log', *SLOW]


def _env(cluster) -> dict:
    return cli_env(SLURM_CONF=cluster.conf)


def _submit(cluster, folder: Path, *flags, wait: bool = False, extra=()) -> subprocess.CompletedProcess | str:
    """Submit the tiny run from ``folder``; returns its job id (with ``wait``: the finished command)."""
    folder.mkdir(parents=True, exist_ok=True)
    args = [*RUN, *extra, '--launcher', 'slurm', '--slurm', 'time=10', *flags] + (['--wait'] if wait else [])
    result = run_cli(args, folder, env=_env(cluster), timeout=600)
    if wait:
        return result
    ok(result)
    return re.search(r'submitted SLURM job (\d+)', result.stdout).group(1)


def _wait_for_text(path: Path, text: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not (path.is_file() and text in path.read_text(errors='replace')):
        assert time.monotonic() < deadline, f'{path}: no {text!r} after {timeout} s'
        time.sleep(0.05)


def _rank_pids(folder: Path) -> dict[int, int]:
    """The training processes of the job run from ``folder``, by rank."""
    found = {}
    for proc in Path('/proc').iterdir():
        try:
            cmdline = (proc / 'cmdline').read_bytes().split(b'\0')
            environ = (proc / 'environ').read_bytes().split(b'\0')
        except OSError:
            continue
        if b'ttm_torchdistill' in cmdline and b'train' in cmdline and any(str(folder).encode() in a for a in cmdline):
            rank = next((int(e.split(b'=', 1)[1]) for e in environ if e.startswith(b'RANK=')), None)
            if rank is not None:
                found[rank] = int(proc.name)
    return found


@pytest.fixture(autouse=True)
def _no_job_left(tmp_path, slurm_cluster):
    """However a test ends, no job of its runs is left behind (it would hold the cluster's slots)."""
    yield
    for record in tmp_path.glob('**/student.slurm/job.json'):
        slurm_cluster.run('scancel', json.loads(record.read_text())['job_id'], check=False)


def _same_training(a: Path, b: Path) -> None:
    x, y = (torch.load(folder / LAST, map_location='cpu', weights_only=False) for folder in (a, b))
    for key in SAME_IN_CHECKPOINTS:
        assert same_values(x.get(key), y.get(key)), key
    assert _records(a / 'run.metrics.jsonl') == _records(b / 'run.metrics.jsonl')


@pytest.fixture(scope='module')
def torchrun_run(tmp_path_factory) -> Path:
    """The uninterrupted reference: the same run under torchrun, 2 CPU ranks."""
    folder = tmp_path_factory.mktemp('torchrun')
    ok(run_cli([*RUN, '--device', 'cpu'], folder, torchrun_nproc=2))
    return folder


def test_jobs_of_two_nodes_and_of_two_tasks_equal_torchrun_signalled_or_requeued(tmp_path, slurm_cluster,
                                                                                torchrun_run):
    """Three jobs at once: 2 nodes x 1 task followed to its end with --wait; 1 node x 2 tasks stopped mid-epoch by
    SLURM's warning (USR2 to its tasks, as --signal sends it), which requeues itself and resumes mid-epoch; 2 nodes
    x 1 task requeued by `scontrol requeue`, which resumes from its last epoch's checkpoint. Each ends with the
    weights, optimizer, generators and metrics of the torchrun run."""
    cluster = slurm_cluster
    (tmp_path / 'x').mkdir()
    waited = subprocess.Popen([sys.executable, '-m', 'ttm_torchdistill', *RUN, '--launcher', 'slurm', '--nodes', '2',
                               '--slurm', 'time=10', '--wait'], cwd=tmp_path / 'x', env=_env(cluster),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    signalled = _submit(cluster, tmp_path / 'usr2', '--tasks-per-node', '2')
    requeued = _submit(cluster, tmp_path / 'requeue', '--nodes', '2')
    _wait_for_text(tmp_path / 'usr2' / 'run.log', 'epoch 2/6  diagnostics')  # the epoch's last line
    cluster.run('scancel', '--signal=USR2', signalled)
    _wait_for_text(tmp_path / 'requeue' / 'run.log', 'epoch 2/6  val')
    cluster.run('scontrol', 'requeue', requeued)
    out, err = waited.communicate(timeout=600)
    assert waited.returncode == 0, out[-3000:] + err[-3000:]
    assert 'the run finished on all 2 rank(s)' in out and 'world size 2 on' in out and 'global batch 16' in out
    for job in (signalled, requeued):
        cluster.wait_for(job, timeout=300)
    usr2_log = (tmp_path / 'usr2' / 'run.log').read_text()
    assert re.search(r'stopped by SIGUSR2 inside epoch \d, after iteration \d of 2', usr2_log), usr2_log
    assert 'resumed from ckpt/tiny/wttm/student.last.pt inside epoch' in usr2_log
    assert re.search(r'resumed from \S+ after epoch \d', (tmp_path / 'requeue' / 'run.log').read_text())
    for folder in ('x', 'usr2', 'requeue'):
        _same_training(torchrun_run, tmp_path / folder)
        assert not (tmp_path / folder / 'ckpt/tiny/wttm/student.pt.lock').exists()


LONG = ['--set', 'train.num_epochs=200']
"""long enough to be killed, cancelled or signalled while it trains"""


def test_a_killed_rank_fails_the_job_in_one_line_naming_it_and_the_run_lock_covers_the_job(tmp_path, slurm_cluster):
    """While the job is queued or running, a second submission on the same outputs is refused in one line; a rank
    killed mid-run fails the job: --wait prints one line naming the rank and the command that resumes it, and exits
    non-zero; the last checkpoint loads whole."""
    cluster, folder = slurm_cluster, tmp_path / 'run'
    folder.mkdir()
    waited = subprocess.Popen([sys.executable, '-m', 'ttm_torchdistill', *RUN, *LONG, '--launcher', 'slurm',
                               '--nodes', '2', '--slurm', 'time=10', '--wait'], cwd=folder, env=_env(cluster),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    record = folder / 'ckpt/tiny/wttm/student.slurm/job.json'
    _wait_for_text(record, 'job_id', timeout=120)
    job = json.loads(record.read_text())['job_id']
    again = run_cli([*RUN, *LONG, '--run-log', 'other.log', '--launcher', 'slurm'], folder, env=_env(cluster))
    assert again.returncode == 2 and f'ttm-distill: error: SLURM job {job} (queued or running) trains this run' \
        in again.stderr, again.stderr
    _wait_for_text(folder / 'run.log', 'epoch 2/200  val')
    pids = _rank_pids(folder)
    assert sorted(pids) == [0, 1], pids
    os.kill(pids[1], signal.SIGKILL)
    out, err = waited.communicate(timeout=300)
    assert waited.returncode == 1, out[-2000:] + err[-2000:]
    lines = [line for line in err.splitlines() if line.startswith('ttm-distill: error:')]
    assert len(lines) == 1 and f'SLURM job {job}: rank 1 (node ' in lines[0] and 'was killed by signal 9' in lines[0]
    assert '--launcher slurm --nodes 2' in lines[0] and lines[0].rstrip().endswith('--resume` continues it')
    assert torch.load(folder / LAST, map_location='cpu', weights_only=False)['epoch'] >= 2
    cluster.wait_for(job, states=('FAILED',), timeout=60)
    assert not _rank_pids(folder)


def test_scancel_leaves_no_process_and_no_lock_and_max_requeues_stops_a_job(tmp_path, slurm_cluster):
    """A cancelled job's ranks end at once, freeing the run lock (its file goes); with --slurm max_requeues=0, SLURM's
    warning stops the run with its resume checkpoint and the job ends with a line saying it was not requeued."""
    cluster = slurm_cluster
    cancelled = _submit(cluster, tmp_path / 'cancel', '--tasks-per-node', '2', extra=LONG)
    bounded = _submit(cluster, tmp_path / 'bound', '--slurm', 'max_requeues=0', extra=LONG)
    lock = tmp_path / 'cancel/ckpt/tiny/wttm/student.pt.lock'
    _wait_for_text(tmp_path / 'cancel/run.log', 'epoch 2/200  val')
    assert lock.is_file() and len(_rank_pids(tmp_path / 'cancel')) == 2
    cluster.run('scancel', cancelled)
    cluster.wait_for(cancelled, states=('CANCELLED',), timeout=60)
    deadline = time.monotonic() + 30
    while _rank_pids(tmp_path / 'cancel') and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _rank_pids(tmp_path / 'cancel') and not lock.exists()
    _wait_for_text(tmp_path / 'bound/run.log', 'epoch 2/200  val')
    cluster.run('scancel', '--signal=USR2', bounded)
    cluster.wait_for(bounded, states=('FAILED',), timeout=120)
    exit_record = json.loads((tmp_path / f'bound/ckpt/tiny/wttm/student.slurm/{bounded}.rank0.exit.json').read_text())
    assert exit_record['code'] == 75 and 'reached max_requeues=0: not requeued again' in exit_record['line']
    assert 'position' in torch.load(tmp_path / 'bound' / LAST, map_location='cpu', weights_only=False)


@pytest.mark.parametrize('flags, message', [
    (['--nodes', '0'], 'ttm-distill: error: --nodes 0: expected at least 1'),
    (['--slurm', 'partitio=debug'], 'ttm-distill: error: --slurm partitio: not a submitit SlurmExecutor parameter'),
    (['--slurm', 'nodes=2'], 'ttm-distill: error: --slurm nodes: set by --nodes'),
    (['--slurm', 'time'], "ttm-distill: error: --slurm 'time': expected KEY=VALUE"),
    (['--slurm', 'max_requeues=-1'], 'ttm-distill: error: --slurm max_requeues=-1: expected an integer >= 0'),
    (['--gpus-per-node', '1'], 'ttm-distill: error: --gpus-per-node 1: partition debug has no GPUs'),
    (['--gpus-per-node', '2', '--tasks-per-node', '1'], 'a GPU job runs one task (rank) per GPU'),
    (['--device', 'cuda'], 'ttm-distill: error: --device cuda with --launcher slurm: give --gpus-per-node G'),
])
def test_refusals_come_before_anything_is_submitted(tmp_path, slurm_cluster, monkeypatch, flags, message):
    monkeypatch.setenv('SLURM_CONF', str(slurm_cluster.conf))
    result = cli([*RUN, '--launcher', 'slurm', *flags], tmp_path)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert 'submitted' not in result.stdout and not (tmp_path / 'ckpt').exists()


def test_a_locked_or_used_run_is_refused_before_submitting(tmp_path, slurm_cluster, monkeypatch):
    """A local run holding the lock, an earlier run's checkpoint without --resume, --resume with nothing to resume,
    and the launcher's flags without --launcher slurm (each command in this process)."""
    from ttm_torchdistill.runner.lock import RunLock

    monkeypatch.setenv('SLURM_CONF', str(slurm_cluster.conf))
    ckpt = tmp_path / 'ckpt/tiny/wttm'
    ckpt.mkdir(parents=True)
    lock = RunLock(ckpt / 'student.pt.lock')
    try:
        held = cli([*RUN, '--launcher', 'slurm'], tmp_path)
    finally:
        lock.release()
    assert held.returncode == 2 and 'another run holds' in held.stderr and f'(PID {os.getpid()} ' in held.stderr
    nothing = cli([*RUN, '--launcher', 'slurm', '--resume'], tmp_path)
    assert nothing.returncode == 2 and '--resume: no checkpoint to resume from' in nothing.stderr
    (ckpt / 'student.last.pt').write_bytes(b'earlier')
    earlier = cli([*RUN, '--launcher', 'slurm'], tmp_path)
    assert earlier.returncode == 2 and 'student.last.pt exists from an earlier run: pass --resume' in earlier.stderr
    assert (ckpt / 'student.last.pt').read_bytes() == b'earlier' and not (ckpt / 'student.slurm').exists()
    local = cli([*RUN, '--nodes', '2'], tmp_path)
    assert local.returncode == 2 and 'ttm-distill: error: --nodes: only with --launcher slurm' in local.stderr
    dry = ok(cli([*RUN, '--set', 'models.student_model.dst_ckpt=new/s.pt', '--launcher', 'slurm', '--nodes', '2',
                      '--dry-run'], tmp_path))
    assert 'one job of 2 node(s) x 1 task(s) = 2 rank(s) (CPU ranks, Gloo)' in dry.stdout
    assert 'each rank runs: ttm-distill train' in dry.stdout and 'dry run: nothing submitted' in dry.stdout
    assert not (tmp_path / 'new').exists()
    refused = cli([*RUN, '--set', 'models.student_model.dst_ckpt=gone/s.pt', '--launcher', 'slurm', '--slurm',
                   'partition=nosuch'], tmp_path)
    assert refused.returncode == 2 and 'ttm-distill: error: sbatch refused the job: ' in refused.stderr
    assert 'invalid partition' in refused.stderr.lower(), refused.stderr
    assert not (tmp_path / 'gone').exists()


def test_wait_ends_with_the_runs_own_error_line_and_exit_code(tmp_path, slurm_cluster):
    """A run that fails inside the job (its loss diverges on NaN images): --wait prints the run's one error line and
    exits with its code."""
    nan = ['--set', 'datasets.blobs/train.init.kwargs={size: 32, seed: 0, nan_from: 0}']
    result = _submit(slurm_cluster, tmp_path / 'run', wait=True, extra=nan)
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith('ttm-distill: error:')]
    assert len(lines) == 1 and 'non-finite loss' in lines[0] and 'at epoch 1, iteration 1' in lines[0], lines
