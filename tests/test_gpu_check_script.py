"""benchmarks/gpu_check.sh runs to the end on a CPU machine, its CUDA tests reported as skipped, so that nothing about
it is first tried on the GPU machine: once as it finds this venv (nothing to install), once installing wheels."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT

SCRIPT = ROOT / 'benchmarks' / 'gpu_check.sh'
FILES = ('env.txt', 'install.log', 'tests.log', 'junit.xml', 'summary.txt', 'gpu_check.log')


def _wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel, as `pip download` would have saved into .whl/."""
    folder.mkdir()
    path = folder / 'gpu_check_fake-0.1-py3-none-any.whl'
    info = 'gpu_check_fake-0.1.dist-info'
    files = {'gpu_check_fake/__init__.py': "VERSION = '0.1'\n",
             f'{info}/METADATA': 'Metadata-Version: 2.1\nName: gpu-check-fake\nVersion: 0.1\n',
             f'{info}/WHEEL': 'Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n'}
    files[f'{info}/RECORD'] = ''.join(f'{name},,\n' for name in [*files, f'{info}/RECORD'])
    with zipfile.ZipFile(path, 'w') as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


@pytest.fixture(scope='module')
def runs(tmp_path_factory) -> dict:
    """Both runs at once (each is mostly Python start-up): 'found' as the venv is; 'wheels' with GPU_CHECK_INSTALL=force
    and a wheel to install."""
    tmp = tmp_path_factory.mktemp('gpu_check')
    base = dict(os.environ, PATH=f'{Path(sys.executable).parent}{os.pathsep}{os.environ["PATH"]}',
                CUDA_VISIBLE_DEVICES='')  # a GPU machine running the CPU suite checks the CPU behaviour too
    base.pop('PYTHONPATH', None)
    _wheel(tmp / 'whl')
    envs = {'found': dict(base, OUT=str(tmp / 'found')),
            'wheels': dict(base, OUT=str(tmp / 'wheels'), GPU_CHECK_INSTALL='force', GPU_CHECK_WHEELS=str(tmp / 'whl'),
                           GPU_CHECK_SITE=str(tmp / 'site'), GPU_CHECK_PARTS='tests,benchmarks')}
    procs = {name: subprocess.Popen(['bash', str(SCRIPT)], cwd=tmp, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True) for name, env in envs.items()}
    results = {}
    for name, proc in procs.items():
        stdout, _ = proc.communicate(timeout=300)
        results[name] = (proc.returncode, stdout, Path(envs[name]['OUT']))
    results['site'] = tmp / 'site'
    return results


def _summary(out: Path) -> dict:
    lines = (out / 'summary.txt').read_text().splitlines()
    return dict(line.split(': ', 1) for line in lines)


@pytest.mark.parametrize('name', ['found', 'wheels'])
def test_the_script_runs_to_the_end_on_cpu_with_the_cuda_tests_skipped(runs, name):
    code, stdout, out = runs[name]
    assert code == 0, stdout[-4000:]
    for file in FILES:
        assert (out / file).is_file() and (out / file).stat().st_size > 0, file
    summary = _summary(out)
    assert summary['env'].startswith('passed') and summary['import'].startswith('passed')
    assert summary['cuda'] == 'skipped (no CUDA device: the CUDA tests skip)'
    tests = {k: v for k, v in summary.items() if k.startswith('test tests/')}
    assert any('tests/test_cuda.py::test_killed_after_one_epoch' in k for k in tests)
    assert tests and all(v == 'skipped (needs a CUDA GPU)' for v in tests.values()), tests
    assert summary['tests'] == f'skipped (0 passed, 0 failed, {len(tests)} skipped; tests.log)'
    assert 'SKIPPED' in (out / 'tests.log').read_text()  # -rs: the reasons are in the log
    env = (out / 'env.txt').read_text()
    for package in ('torch', 'torchvision', 'timm', 'torchdistill', 'nvidia-smi'):
        assert package in env
    assert (out / 'summary.txt').read_text() in stdout and stdout in (out / 'gpu_check.log').read_text()


def test_the_benchmark_part_is_asked_for_and_skips_without_a_gpu(runs):
    assert 'benchmarks' not in _summary(runs['found'][2])
    assert _summary(runs['wheels'][2])['benchmarks'] == 'skipped (no CUDA device: the GPU rows need one)'


def test_an_importable_setup_installs_nothing(runs):
    _, _, out = runs['found']
    assert _summary(out)['install'] == 'skipped (torchdistill and ttm_torchdistill already import)'


def test_forced_installation_puts_the_wheels_and_the_tree_on_the_path(runs):
    _, _, out = runs['wheels']
    assert _summary(out)['install'].startswith('passed (1 wheel(s) from ')
    assert (runs['site'] / 'gpu_check_fake' / '__init__.py').is_file()
    log = (out / 'install.log').read_text()
    assert f'PYTHONPATH={ROOT}:{runs["site"]}' in log
    assert f'from {ROOT / "ttm_torchdistill" / "__init__.py"}' in log
