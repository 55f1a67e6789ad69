"""The package's structure: import-linter's layer, purity and cycle contracts break when they should (`make lint`
checks that they hold), and every module is small and says what it holds."""
import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / 'ttm_torchdistill'
LINT_IMPORTS = Path(sys.executable).with_name('lint-imports')
MAX_LINES = 400


def _lint(tree: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(tree))
    return subprocess.run([str(LINT_IMPORTS), '--config', str(tree / 'pyproject.toml'), '--no-cache'], cwd=tree,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def copy(tmp_path) -> Path:
    """A copy of the package's Python modules and pyproject.toml, to break on purpose."""
    shutil.copytree(PACKAGE, tmp_path / 'ttm_torchdistill', ignore=shutil.ignore_patterns('recipes', '__pycache__'))
    shutil.copy(ROOT / 'pyproject.toml', tmp_path)
    return tmp_path


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + line + '\n')


@pytest.mark.parametrize('module, line, contract', [
    ('runner/run.py', 'from ..sweep import plan  # noqa', 'Layers'),  # the runner reaching up to the sweep
    ('formats/summary.py', 'from .. import recipe  # noqa', 'Layers'),  # a file format reaching up
    ('description.py', 'from . import outputs  # noqa', 'Layers'),  # the run description is below the outputs
    ('functional/feature.py', 'import torchdistill  # noqa', 'The math is pure torch'),
    ('sweep/plan.py', 'from . import command  # noqa', 'No import cycles'),  # command -> plan -> command
])
def test_an_upward_import_breaks_a_contract(copy, module, line, contract):
    _append(copy / 'ttm_torchdistill' / module, line)
    result = _lint(copy)
    assert result.returncode != 0
    assert contract in result.stdout and 'BROKEN' in result.stdout, result.stdout


def test_a_new_top_level_package_must_be_placed_in_a_layer(copy):
    (copy / 'ttm_torchdistill' / 'extra.py').write_text('"""An unplaced module."""\n')
    result = _lint(copy)
    assert result.returncode != 0 and 'extra' in result.stdout, result.stdout


@pytest.mark.parametrize('path', sorted(PACKAGE.rglob('*.py')), ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_each_module_is_small_and_says_what_it_holds(path):
    text = path.read_text()
    assert len(text.splitlines()) <= MAX_LINES, f'{path} has {len(text.splitlines())} lines'
    docstring = ast.get_docstring(ast.parse(text))
    assert docstring and docstring.splitlines()[0].strip(), f'{path} has no first line saying what it holds'
