"""sweep --runs-per-gpu N: N runs at once on each visible GPU, each pinned with CUDA_VISIBLE_DEVICES; on CPU a note."""
import json
import os

import pytest
from conftest import TINY

from ttm_torchdistill.cli import main
from ttm_torchdistill.sweep import local


def test_each_packed_run_gets_its_gpu(tmp_path, monkeypatch, capsys):
    """2 runs on 1 fake GPU x 2: both at once, both pinned to it (they train on the CPU; test_slots_and_the_cpu_note
    checks how slots spread over several GPUs)."""
    (tmp_path / 'probe').mkdir()
    monkeypatch.setattr(local, 'visible_gpus', lambda: ['7'])
    monkeypatch.setenv('GPU_PROBE_COMMAND', 'train')  # tests/gpu_probe.py: each run records its GPUs
    monkeypatch.setenv('GPU_PROBE_DIR', str(tmp_path / 'probe'))
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    monkeypatch.chdir(tmp_path)
    deps = 'dependencies=[{name: ttm_torchdistill}, {name: tiny}, {name: gpu_probe}]'
    assert main(['sweep', str(TINY), '--grid', 'gamma=0.5,0.8', '--seeds', '0', '--set', deps,
                 '--set', 'train.num_epochs=1', '-o', 'out', '--runs-per-gpu', '2']) == 0
    out = capsys.readouterr().out
    assert '2 of 2 run(s) to do, 2 at a time, 2 per GPU' in out
    records = [json.loads(p.read_text()) for p in (tmp_path / 'probe').iterdir()]
    assert sorted(next(a for a in r['argv'] if a.endswith('student.pt')).split('/')[-3] for r in records) == \
        ['gamma0.5', 'gamma0.8']
    assert [r['cuda'] for r in records] == ['7', '7']
    lines = out.splitlines()
    first_end = next(i for i, line in enumerate(lines) if line.startswith('[1/2]'))
    assert sum(line.startswith('started ') for line in lines[:first_end]) == 2  # both started at once


def test_slots_and_the_cpu_note(monkeypatch, capsys, tmp_path):
    sweep = object()
    monkeypatch.setattr(local, 'visible_gpus', lambda: ['0', '1', '2'])
    launcher = local.LocalLauncher(sweep, None, 3)
    assert launcher.parallel == 9 and launcher.note is None
    assert [launcher._env(slot)['CUDA_VISIBLE_DEVICES'] for slot in range(9)] == ['0', '1', '2'] * 3
    launcher.describe()
    assert capsys.readouterr().out == 'local launcher: 9 run(s) at a time on GPUs 0,1,2, 3 runs per GPU\n'
    assert local.LocalLauncher(sweep, 4, 3).parallel == 4  # --parallel caps the slots
    monkeypatch.setattr(local, 'visible_gpus', lambda: [])
    cpu = local.LocalLauncher(sweep, None, 2)
    assert cpu.parallel == 1 and cpu._env(0).get('CUDA_VISIBLE_DEVICES') == os.environ.get('CUDA_VISIBLE_DEVICES')
    cpu.describe()
    assert capsys.readouterr().out.splitlines() == [
        'note: --runs-per-gpu 2 has no effect: no GPU is visible, so runs share the CPU, 1 at a time (--parallel)',
        'local launcher: 1 run(s) at a time on CPU']


@pytest.mark.parametrize('args, fragment', [
    (['--runs-per-gpu', '0'], '--runs-per-gpu 0: must be at least 1'),
    (['--runs-per-gpu', '2', '--launcher', 'slurm'], '--runs-per-gpu needs --launcher local'),
])
def test_bad_runs_per_gpu_is_one_line_and_creates_nothing(tmp_path, capsys, args, fragment):
    assert main(['sweep', str(TINY), '--grid', 'gamma=0.5', '-o', str(tmp_path / 'out'), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fragment in err[0]
    assert not (tmp_path / 'out').exists()
