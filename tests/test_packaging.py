"""A non-editable install carries the recipes and the console script; building it leaves the checkout as it was."""
import shutil
import subprocess
import sys
import zipfile

from conftest import ROOT


def _tracked_copy(target):
    """The checkout's files that git does not ignore (a build writes build/ and *.egg-info where it runs: not in the
    checkout)."""
    listing = ['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard']
    files = subprocess.run(listing, cwd=ROOT, check=True, capture_output=True).stdout.split(b'\0')
    for name in filter(None, (f.decode() for f in files)):
        source, copy = ROOT / name, target / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            copy.symlink_to(source.readlink())
        elif source.is_file():
            shutil.copy2(source, copy)
    return target


def test_wheel_installs_recipes_and_entry_point(tmp_path):
    before = sorted(p.name for p in ROOT.iterdir())
    source = _tracked_copy(tmp_path / 'source')
    subprocess.run([sys.executable, '-m', 'pip', 'wheel', '-q', str(source), '--no-deps', '-w', str(tmp_path / 'whl')],
                   check=True, capture_output=True)
    assert sorted(p.name for p in ROOT.iterdir()) == before
    (wheel,) = (tmp_path / 'whl').glob('*.whl')
    names = zipfile.ZipFile(wheel).namelist()
    assert 'ttm_torchdistill/recipes/ilsvrc2012/wttm/resnet18_from_resnet34.yaml' in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith('entry_points.txt'))).decode()
    assert 'ttm-distill = ttm_torchdistill.cli:command' in entry_points
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
