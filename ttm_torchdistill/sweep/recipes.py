"""The recipes of a sweep: each opened once with the sweep's --set overrides, checked to be one teacher-student pair
when there are several, and labelled with the folder its runs go in (``DIR/<label>/...``; a one-recipe sweep's runs lie
directly under DIR)."""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..description import Override
from ..errors import UsageError
from ..formats.summary import is_finite_number
from ..recipe import RecipeDocument, RecipeView, parse_overrides, resolve_recipe, shipped_root
from .runfolder import OUTPUT_KEY

__all__ = ['RESERVED', 'PAIR_KEYS', 'SweepRecipe', 'check_one_pair', 'folder_name', 'label_recipes', 'open_recipes']

RESERVED = ('lockstep', 'slurm', 'tensorboard')
"""the folders a sweep folder holds besides its runs, which no recipe's label may take"""
PAIR_KEYS = ('the student model key', 'the teacher model key', 'the training dataset')
"""what the recipes of one sweep share (:func:`check_one_pair`)"""


@dataclass
class SweepRecipe:
    """A recipe of the sweep, opened once (the sweep's --set overrides applied)."""

    given: str
    """as given (a file or a shipped name)"""
    path: Path
    doc: RecipeDocument
    view: RecipeView
    label: str = ''
    """the folder of its runs under DIR and its name in the table; '' in a one-recipe sweep"""
    keys: list[str] = field(default_factory=list)
    """each grid axis's full --set key in this recipe (a short name reaches this recipe's term)"""

    @property
    def dst_key(self) -> str:
        """The key of the student's dst_ckpt, which the sweep sets per run."""
        return f'models.{self.view.student_key}.{OUTPUT_KEY}'

    @property
    def ckpt_name(self) -> str:
        return Path(self.view.dst_ckpt).name

    @property
    def paper_top1(self) -> float | None:
        """The top-1 the paper reports (``paper.top1``), if the recipe says."""
        value = self.doc.value('paper.top1')
        return float(value) if is_finite_number(value) else None


def open_recipes(specs: Sequence[str], overrides: list[Override]) -> list[SweepRecipe]:
    """Each recipe (a file or a shipped name) resolved and opened with ``overrides``, its plugins imported (their
    methods' short names) and its checkpoint path checked; one given twice is refused."""
    recipes: list[SweepRecipe] = []
    for spec in specs:
        path = resolve_recipe(spec).resolve()
        twice = next((r for r in recipes if r.path == path), None)
        if twice is not None:
            same = 'given twice' if twice.given == spec else f'and {twice.given} are the same file ({path})'
            raise UsageError(f'sweep: recipe {spec} {same}; give each recipe once')
        doc = RecipeDocument.open(path, parse_overrides(overrides))
        doc.import_dependencies()
        recipe = SweepRecipe(spec, path, doc, RecipeView(doc))
        if not isinstance(recipe.view.dst_ckpt, str) or not recipe.view.dst_ckpt:
            raise UsageError(f'{path}: {recipe.dst_key} is required')
        recipes.append(recipe)
    return recipes


def _pair(recipe: SweepRecipe) -> tuple[tuple[str, object], ...]:
    """(key, value) of what makes the recipe's pair, in :data:`PAIR_KEYS` order."""
    view, student = recipe.view, f'models.{recipe.view.student_key}.key'
    return ((student, view.model_key(view.student_key)), ('models.teacher_model.key', view.model_key('teacher_model')),
            (f'{view.loader_path("train")}.dataset_id', view.dataset_id('train')))


def check_one_pair(recipes: list[SweepRecipe]) -> None:
    """Refuse recipes that differ in :data:`PAIR_KEYS` (one line naming both recipes and the key)."""
    first = _pair(recipes[0])
    for recipe in recipes[1:]:
        for (key, mine), (_, theirs), what in zip(first, _pair(recipe), PAIR_KEYS, strict=True):
            if mine != theirs:
                raise UsageError(f'sweep: recipes {recipes[0].given} and {recipe.given} are not one teacher-student '
                                 f'pair: {what} differs ({key}: {mine!r} vs {theirs!r}); the recipes of one sweep '
                                 'share their student, teacher and data (sweep the others into another DIR)')


def folder_name(text: str) -> str:
    """``text`` as a folder name: characters other than letters, digits and ``._+-`` become ``-``."""
    return re.sub(r'[^A-Za-z0-9._+-]', '-', text)


def _names(path: Path) -> list[str]:
    """A recipe's labels, shortest first, each one telling more of its name apart: a shipped recipe's method folder,
    then with its dataset, then with its pair ('kd', 'cifar100-kd', 'cifar100-kd-resnet8x4_from_resnet32x4'; the demo's
    'kd', 'demo-kd'); a file's stem, then with its folders, nearest first ('kd', 'mine-kd', 'home-mine-kd', ...)."""
    try:
        parts = path.relative_to(shipped_root().resolve()).with_suffix('').parts
    except ValueError:
        parts = path.with_suffix('').parts[1:]
        return [folder_name('-'.join(parts[-k:])) for k in range(1, len(parts) + 1)]
    method = parts[1] if len(parts) > 1 else parts[0]
    return list(dict.fromkeys(folder_name(name) for name in (method, '-'.join(parts[:2]), '-'.join(parts))))


def label_recipes(recipes: list[SweepRecipe]) -> None:
    """Give each recipe its folder label: '' for a sweep's one recipe; else the method folder of a shipped recipe
    ('kd', 'wttm') or a file's stem, and where two would share one (or one would take a folder of :data:`RESERVED`),
    their longer labels until they differ ('cifar100-kd' and 'mine-kd'). Two that still share one are refused in one
    line."""
    if len(recipes) == 1:
        recipes[0].label = ''
        return
    names = [_names(r.path) for r in recipes]
    level = [0] * len(recipes)
    while True:
        labels = [n[k] for n, k in zip(names, level, strict=True)]
        clashing = [i for i, label in enumerate(labels) if labels.count(label) > 1 or label in RESERVED]
        longer = [i for i in clashing if level[i] + 1 < len(names[i])]
        if not longer:
            break
        for i in longer:
            level[i] += 1
    for i, (recipe, label) in enumerate(zip(recipes, labels, strict=True)):
        other = next((recipes[j] for j in range(len(recipes)) if j != i and labels[j] == label), None)
        if other is not None or label in (*RESERVED, '', '.', '..'):
            clash = f'as {other.given} would' if other is not None else 'a name the sweep folder keeps for itself'
            raise UsageError(f'sweep: recipe {recipe.given} would get the folder DIR/{label}/, {clash}; rename or '
                             'copy a recipe file so that their names differ')
        recipe.label = label
