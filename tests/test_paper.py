"""The paper's tables render every shipped CIFAR-100 and ImageNet recipe, byte for byte."""
import ast
import dataclasses
import shutil
import sys
from pathlib import Path

import pytest

import ttm_torchdistill
from ttm_torchdistill import paper
from ttm_torchdistill.paper import cifar100, imagenet, render_all, write_recipes
from ttm_torchdistill.paper.__main__ import main

RECIPES = Path(ttm_torchdistill.__file__).resolve().parent / 'recipes'
PAPER = Path(paper.__file__).resolve().parent


def _committed(folder):
    return sorted(p.relative_to(RECIPES).as_posix() for p in (RECIPES / folder).rglob('*.yaml'))


def test_committed_recipes_are_what_the_tables_render():
    assert write_recipes(RECIPES, check=True) == []


def test_the_command_checks_every_recipe(capsys):
    assert main(['--check']) == 0
    assert capsys.readouterr().out == '0 recipe(s) differ\n'


def test_every_cifar_and_imagenet_recipe_is_rendered_and_nothing_else():
    rendered = render_all()
    assert sorted(rel for rel in rendered if rel.startswith('ilsvrc2012/')) == _committed('ilsvrc2012')
    # the ResNet/MobileNet experiments, DIST/DKD, CRD/ReviewKD/ITRD, the DeiT run
    assert len(_committed('ilsvrc2012')) == 9 + 4 + 5 + 3
    assert sorted(rendered) == sorted(_committed('cifar100') + _committed('ilsvrc2012'))
    assert not any(rel.startswith('demo/') for rel in rendered)


def _modified(rows, index, **changes):
    rows = list(rows)
    rows[index] = dataclasses.replace(rows[index], **changes)
    return tuple(rows)


def test_changing_an_imagenet_table_value_fails_the_check(monkeypatch):
    index = next(i for i, e in enumerate(imagenet.EXPERIMENTS)
                 if (e.method, e.teacher, e.student) == ('wttm', 'resnet34', 'resnet18'))
    monkeypatch.setattr(imagenet, 'EXPERIMENTS', _modified(imagenet.EXPERIMENTS, index, params=(0.8, 1.7)))
    assert write_recipes(RECIPES, check=True) == ['ilsvrc2012/wttm/resnet18_from_resnet34.yaml']
    assert 'beta: 1.7\n' in render_all()['ilsvrc2012/wttm/resnet18_from_resnet34.yaml']


def test_changing_a_cifar_table_value_fails_the_check(monkeypatch):
    index = next(i for i, p in enumerate(cifar100.PAIRS) if (p.teacher, p.student) == ('resnet32x4', 'resnet8x4'))
    monkeypatch.setattr(cifar100, 'PAIRS', _modified(cifar100.PAIRS, index, ttm=(0.1, 101)))
    assert write_recipes(RECIPES, check=True) == ['cifar100/ttm/resnet8x4_from_resnet32x4.yaml']


def test_check_reports_edited_missing_and_extra_files_and_writing_restores_them(tmp_path):
    for folder in paper.DATASETS:
        shutil.copytree(RECIPES / folder, tmp_path / folder)
    assert write_recipes(tmp_path, check=True) == []
    edited = tmp_path / 'ilsvrc2012/kd/resnet18_from_resnet34.yaml'
    edited.write_text(edited.read_text().replace('temperature: 1.0', 'temperature: 2.0'))
    (tmp_path / 'cifar100/ce/wrn_40_2.yaml').unlink()
    (tmp_path / 'ilsvrc2012/wttm/by_hand.yaml').write_text('{}\n')
    expected = ['cifar100/ce/wrn_40_2.yaml', 'ilsvrc2012/kd/resnet18_from_resnet34.yaml']
    assert write_recipes(tmp_path, check=True) == expected + ['ilsvrc2012/wttm/by_hand.yaml']
    assert 'temperature: 2.0' in edited.read_text()  # check writes nothing
    assert write_recipes(tmp_path) == expected
    assert write_recipes(tmp_path, check=True) == ['ilsvrc2012/wttm/by_hand.yaml']
    assert edited.read_text() == (RECIPES / 'ilsvrc2012/kd/resnet18_from_resnet34.yaml').read_text()


def test_imagenet_ttm_rows_follow_eq_19_from_wttm_and_kd():
    # TTM is not tuned in the paper on ImageNet: WTTM's gamma, and beta = lambda / (1 - lambda) * T with
    # T = 1 / gamma and lambda the KD baseline's alpha (0.5), rounded to two decimals as the recipes say.
    rows = {(e.method, e.teacher, e.student): e for e in imagenet.EXPERIMENTS}
    ttm = [e for e in imagenet.EXPERIMENTS if e.method == 'ttm']
    assert len(ttm) == 2
    for e in ttm:
        gamma, beta = e.params
        assert gamma == rows['wttm', e.teacher, e.student].params[0]
        lam = rows['kd', e.teacher, e.student].params[1]
        assert beta == round(lam / (1 - lam) / gamma, 2)
        assert e.top1 is None and e.source == imagenet.NOT_REPORTED


@pytest.mark.parametrize('module', sorted(PAPER.glob('*.py')), ids=lambda p: p.name)
def test_the_package_imports_only_the_standard_library_models_and_methods(module):
    tree = ast.parse(module.read_text())
    assert ast.get_docstring(tree).splitlines()[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert all(alias.name.split('.')[0] in sys.stdlib_module_names for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                assert node.module.split('.')[0] in sys.stdlib_module_names, node.module
            elif node.level == 2:
                assert node.module in ('models', 'methods') or node.module.startswith('models.'), node.module
            else:
                assert node.level == 1
