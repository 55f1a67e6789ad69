"""The `slurm_cluster` fixture is a real, working SLURM cluster of two nodes: job arrays with a throttle, jobs over
both nodes, submitit, signals, requeue."""
import os
import socket
import sys
import time
from pathlib import Path

import pytest
import slurm_cluster as cluster_module
import submitit

TESTS = Path(__file__).resolve().parent
HOST = socket.gethostname().split('.')[0]
TASK_VARS = ('SLURMD_NODENAME', 'SLURM_NODEID', 'SLURM_PROCID', 'SLURM_LOCALID', 'SLURM_JOB_NODELIST')
# an srun task: starts a child python process (argument 'child'); both record their node, USR2 and TERM
SIGNAL_RECORDER = """
import os, signal, subprocess, sys, time
out, role = sys.argv[1], sys.argv[2]
path = f"{out}/{role}.{os.environ['SLURMD_NODENAME']}"

def record(what):
    with open(path, 'a') as f:
        f.write(what + '\\n')

def on_signal(signum, frame):
    record(signal.Signals(signum).name)
    if signum == signal.SIGTERM:
        sys.exit(0)

signal.signal(signal.SIGUSR2, on_signal)
signal.signal(signal.SIGTERM, on_signal)
if role == 'task':
    subprocess.Popen([sys.executable, __file__, out, 'child'])
record('ready')
while True:
    time.sleep(0.1)
"""


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one instant."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def read_intervals(folder: Path) -> dict[int, tuple[float, float]]:
    """{task: (start, end)} from the files `task_<id>` holding two epoch times."""
    out = {}
    for path in folder.glob('task_*'):
        start, end = map(float, path.read_text().split())
        out[int(path.name.split('_')[1])] = (start, end)
    return out


def timed_square(x: int, folder: str) -> int:
    """Run on the cluster by submitit: record this task's start/end times, return x squared."""
    start = time.time()
    time.sleep(1)
    Path(folder, f'task_{x}').write_text(f'{start} {time.time()}\n')
    return x * x


@pytest.fixture
def submitit_env(slurm_cluster, monkeypatch):
    """submitit calls sbatch in this process: point it at the test cluster; jobs import this module from tests/."""
    monkeypatch.setenv('SLURM_CONF', str(slurm_cluster.conf))
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join(filter(None, [str(TESTS), os.environ.get('PYTHONPATH')])))


def test_unavailable_reason_names_the_package(monkeypatch):
    monkeypatch.setattr(cluster_module, '_which', lambda name: None if name in ('munged', 'sinfo') else f'/x/{name}')
    monkeypatch.setattr(os, 'geteuid', lambda: 0)
    assert cluster_module.unavailable_reason() == (
        'SLURM binaries not found: munged, sinfo (apt-get install munge slurm-client)')
    monkeypatch.setattr(os, 'geteuid', lambda: 1000)
    assert 'as root' in cluster_module.unavailable_reason()


def wait_until(condition, timeout: float, what: str, cluster) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f'{what} after {timeout} s\n{cluster.log_tails()}'
        time.sleep(0.1)


def test_nodes_are_slurmd_daemons_on_this_host(slurm_cluster):
    assert slurm_cluster.nodes == ['ttmnode1', 'ttmnode2'] and slurm_cluster.node == 'ttmnode1'
    mem_total_mb = int(Path('/proc/meminfo').read_text().split()[1]) / 1024
    ports = set()
    for name in slurm_cluster.nodes:
        node = dict(item.split('=', 1) for item in
                    slurm_cluster.run('scontrol', '--oneliner', 'show', 'node', name).stdout.split() if '=' in item)
        assert node['NodeName'] == name and node['State'] == 'IDLE'
        assert node['NodeHostName'] == HOST and node['NodeAddr'] == '127.0.0.1'
        assert int(node['CPUTot']) == slurm_cluster.cpus == os.cpu_count()
        assert 0.95 * mem_total_mb < int(node['RealMemory']) <= mem_total_mb
        ports.add(node['Port'])
    assert len(ports) == 2
    assert all(f'== slurmd.{name}.log' in slurm_cluster.log_tails() for name in slurm_cluster.nodes)


def test_a_one_node_cluster_is_named_after_this_host(tmp_path):
    assert cluster_module.SlurmCluster(tmp_path, nodes=3).nodes == ['ttmnode1', 'ttmnode2', 'ttmnode3']
    if cluster_module.unavailable_reason():
        pytest.skip(cluster_module.unavailable_reason())
    with cluster_module.start_cluster(tmp_path / 'slurm') as cluster:
        assert cluster.nodes == [HOST] == [cluster.node] and cluster.node_states() == {HOST: 'idle'}
        job = cluster.sbatch(f'--ntasks={cluster.cpus}', f'--output={tmp_path}/out', '--wrap',
                             'srun bash -c \'echo "$SLURMD_NODENAME $(hostname)"\'')
        cluster.wait_for(job)
        assert (tmp_path / 'out').read_text().split('\n') == [f'{HOST} {HOST}'] * cluster.cpus + ['']


def test_srun_tasks_spread_over_the_nodes(slurm_cluster, tmp_path):
    report = ' '.join(f'${name}' for name in TASK_VARS)
    layouts = {'2x1': ('--nodes=2', '--ntasks-per-node=1'), '1x2': ('--nodes=1', '--ntasks-per-node=2'),
               '2x2': ('--nodes=2', '--ntasks-per-node=2')}
    jobs = {name: slurm_cluster.sbatch(*spec, f'--output={tmp_path}/{name}', '--wrap',
                                       f'srun bash -c \'echo "{report} $(hostname)"\'')
            for name, spec in layouts.items()}
    tasks = {}
    for name, job in jobs.items():
        slurm_cluster.wait_for(job, timeout=60)
        lines = [line.split() for line in (tmp_path / name).read_text().splitlines()]
        tasks[name] = sorted((node, int(node_id), int(rank), int(local)) for node, node_id, rank, local, *_ in lines)
        assert {(line[4], line[5]) for line in lines} == {(
            'ttmnode1' if name == '1x2' else 'ttmnode[1-2]', HOST)}, lines  # the node names, one host name
    assert tasks['2x1'] == [('ttmnode1', 0, 0, 0), ('ttmnode2', 1, 1, 0)]
    assert tasks['1x2'] in ([(node, 0, 0, 0), (node, 0, 1, 1)] for node in slurm_cluster.nodes)
    assert tasks['2x2'] == [('ttmnode1', 0, 0, 0), ('ttmnode1', 0, 1, 1), ('ttmnode2', 1, 2, 0), ('ttmnode2', 1, 3, 1)]


def test_throttled_job_array(slurm_cluster, tmp_path):
    script = tmp_path / 'task.sh'
    script.write_text('#!/bin/bash\nstart=$(date +%s.%N); sleep 2\n'
                      f'echo "$start $(date +%s.%N)" > {tmp_path}/task_$SLURM_ARRAY_TASK_ID\n')
    job = slurm_cluster.sbatch('--array=0-3%2', f'--output={tmp_path}/%A_%a.out', str(script))
    states = slurm_cluster.wait_for(job, tasks=4, timeout=60)
    assert sorted(states) == [f'{job}_{i}' for i in range(4)]
    intervals = read_intervals(tmp_path)
    assert sorted(intervals) == [0, 1, 2, 3]
    assert max_overlap(list(intervals.values())) == min(2, slurm_cluster.cpus)


def test_submitit_job_and_map_array(slurm_cluster, submitit_env, tmp_path):
    executor = submitit.AutoExecutor(folder=tmp_path / 'submitit', cluster='slurm')
    executor.update_parameters(slurm_partition=slurm_cluster.partition, timeout_min=5, cpus_per_task=1)
    job = executor.submit(timed_square, 7, str(tmp_path))
    slurm_cluster.wait_for(job.job_id, timeout=60)
    assert job.result() == 49

    executor.update_parameters(slurm_array_parallelism=2)
    (tmp_path / 'array').mkdir()
    jobs = executor.map_array(timed_square, [0, 1, 2, 3], [str(tmp_path / 'array')] * 4)
    base = jobs[0].job_id.split('_')[0]
    assert [j.job_id for j in jobs] == [f'{base}_{i}' for i in range(4)]
    slurm_cluster.wait_for(base, tasks=4, timeout=60)
    assert [j.result() for j in jobs] == [0, 1, 4, 9]
    intervals = read_intervals(tmp_path / 'array')
    assert max_overlap(list(intervals.values())) == min(2, slurm_cluster.cpus)


def job_environment() -> dict:
    """Run on the cluster by submitit, in each task: what submitit and SLURM say about this task."""
    env = submitit.JobEnvironment()
    return {'global_rank': env.global_rank, 'local_rank': env.local_rank, 'node': env.node,
            'num_nodes': env.num_nodes, 'num_tasks': env.num_tasks, 'hostnames': env.hostnames,
            'hostname': env.hostname, 'slurmd_nodename': os.environ['SLURMD_NODENAME']}


def test_a_submitit_job_on_two_nodes_returns_one_result_per_task(slurm_cluster, submitit_env, tmp_path):
    executor = submitit.AutoExecutor(folder=tmp_path / 'submitit', cluster='slurm')
    executor.update_parameters(slurm_partition=slurm_cluster.partition, nodes=2, tasks_per_node=1, cpus_per_task=1,
                               timeout_min=5)
    job = executor.submit(job_environment)
    slurm_cluster.wait_for(job.job_id, timeout=60)
    common = {'local_rank': 0, 'num_nodes': 2, 'num_tasks': 2, 'hostnames': ['ttmnode1', 'ttmnode2'], 'hostname': HOST}
    assert job.results() == [{**common, 'global_rank': rank, 'node': rank, 'slurmd_nodename': f'ttmnode{rank + 1}'}
                             for rank in (0, 1)]


def test_usr2_reaches_the_tasks_on_both_nodes_and_their_children_then_scancel_terms_them(slurm_cluster, tmp_path):
    (tmp_path / 'recorder.py').write_text(SIGNAL_RECORDER)
    out = tmp_path / 'signals'
    out.mkdir()
    job = slurm_cluster.sbatch('--nodes=2', '--ntasks-per-node=1', f'--output={tmp_path}/out', '--wrap',
                               f'srun {sys.executable} {tmp_path}/recorder.py {out} task')
    names = {f'{role}.{node}' for role in ('task', 'child') for node in slurm_cluster.nodes}

    def records():
        return {path.name: path.read_text().split() for path in out.iterdir()}

    wait_until(lambda: records() == {name: ['ready'] for name in names}, 30, f'not ready: {records()}', slurm_cluster)
    slurm_cluster.run('scancel', '--signal=USR2', job)
    wait_until(lambda: all(r[1:] == ['SIGUSR2'] for r in records().values()), 10, f'no USR2: {records()}',
               slurm_cluster)
    slurm_cluster.run('scancel', job)
    slurm_cluster.wait_for(job, ('CANCELLED',), timeout=30)
    wait_until(lambda: all(r == ['ready', 'SIGUSR2', 'SIGTERM'] for r in records().values()), 10,
               f'no TERM: {records()}', slurm_cluster)


def test_requeue_runs_a_two_node_job_again_on_both_nodes(slurm_cluster, tmp_path):
    starts = tmp_path / 'starts'
    # the batch script and each task record the restart count (unset on the first run), the tasks their node too;
    # the first run waits to be requeued, the second one ends at once
    task = (f'echo "$SLURMD_NODENAME ${{SLURM_RESTART_COUNT:-0}}" >> {starts}; '
            '[ "${SLURM_RESTART_COUNT:-0}" -ge 1 ] || sleep 120')
    script = tmp_path / 'count.sh'
    script.write_text(f'#!/bin/bash\necho "batch:$SLURM_RESTART_COUNT" >> {starts}\nsrun bash -c \'{task}\'\n')
    job = slurm_cluster.sbatch('--nodes=2', '--ntasks-per-node=1', f'--output={tmp_path}/out', str(script))
    wait_until(lambda: starts.exists() and len(starts.read_text().splitlines()) == 3, 30, 'not started',
               slurm_cluster)
    slurm_cluster.run('scontrol', 'requeue', job)
    slurm_cluster.wait_for(job, timeout=60)
    assert sorted(starts.read_text().splitlines()) == [
        'batch:', 'batch:1', 'ttmnode1 0', 'ttmnode1 1', 'ttmnode2 0', 'ttmnode2 1']
    assert 'Restarts=1 ' in slurm_cluster.run('scontrol', 'show', 'job', job).stdout
