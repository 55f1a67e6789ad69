"""A non-editable install carries the recipes and the console script."""
import subprocess
import sys
import zipfile

from conftest import ROOT


def test_wheel_installs_recipes_and_entry_point(tmp_path):
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', str(ROOT), '--no-deps', '-w', str(tmp_path / 'whl')],
                   check=True, capture_output=True)
    (wheel,) = (tmp_path / 'whl').glob('*.whl')
    names = zipfile.ZipFile(wheel).namelist()
    assert 'ttm_torchdistill/recipes/ilsvrc2012/wttm/resnet18_from_resnet34.yaml' in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith('entry_points.txt'))).decode()
    assert 'ttm-distill = ttm_torchdistill.cli:main' in entry_points
    target = tmp_path / 'site'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target', str(target), str(wheel)],
                   check=True, capture_output=True)
    out = subprocess.run([sys.executable, '-c', 'import ttm_torchdistill; print(ttm_torchdistill.__file__)',
                          ], cwd=tmp_path, env={'PYTHONPATH': str(target), 'PATH': '/usr/bin:/bin'},
                         capture_output=True, text=True, check=True).stdout
    assert out.startswith(str(target))
    listed = subprocess.run([sys.executable, '-m', 'ttm_torchdistill', 'recipes'], cwd=tmp_path,
                            env={'PYTHONPATH': str(target), 'PATH': '/usr/bin:/bin'},
                            capture_output=True, text=True, check=True).stdout.split()
    assert 'ilsvrc2012/wttm/mobilenet_v1_from_resnet50' in listed and 'demo/wttm' in listed
