"""The `slurm_cluster` fixture is a real, working SLURM cluster: job arrays with a throttle, submitit, requeue."""
import os
import time
from pathlib import Path

import pytest
import slurm_cluster as cluster_module
import submitit

TESTS = Path(__file__).resolve().parent


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


def test_node_is_this_host(slurm_cluster):
    node = dict(item.split('=', 1) for item in
                slurm_cluster.run('scontrol', '--oneliner', 'show', 'node', slurm_cluster.node).stdout.split()
                if '=' in item)
    assert node['NodeName'] == slurm_cluster.node and node['State'] == 'IDLE'
    assert int(node['CPUTot']) == slurm_cluster.cpus == os.cpu_count()
    mem_total_mb = int(Path('/proc/meminfo').read_text().split()[1]) / 1024
    assert 0.95 * mem_total_mb < int(node['RealMemory']) <= mem_total_mb


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


def test_requeue_runs_the_job_again(slurm_cluster, tmp_path):
    starts = tmp_path / 'starts'
    script = tmp_path / 'count.sh'
    # the first run waits to be requeued; the second one ends at once
    script.write_text(f'#!/bin/bash\necho "$SLURM_RESTART_COUNT" >> {starts}\n'
                      f'[ "$(wc -l < {starts})" -ge 2 ] || sleep 120\n')
    job = slurm_cluster.sbatch(f'--output={tmp_path}/out', str(script))
    slurm_cluster.wait_for(job, ('RUNNING',))
    deadline = time.monotonic() + 30
    while not starts.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    slurm_cluster.run('scontrol', 'requeue', job)
    slurm_cluster.wait_for(job, timeout=60)
    assert starts.read_text().split('\n') == ['', '1', '']
    assert 'Restarts=1 ' in slurm_cluster.run('scontrol', 'show', 'job', job).stdout
