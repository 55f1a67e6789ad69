"""The sweep manifest (``DIR/sweep.json``): its record, version, writing, reading and checking.

`ttm-distill sweep` writes it as a :class:`SweepManifest`: what makes the sweep itself (``identity``: recipes, --set
overrides, grid names), the (first) recipe, overrides, grid (name, --set key, label, values) and seeds, the recipes
(:class:`RecipeRecord`: label, recipe, path, grid keys, the paper's top-1), and per run (:class:`RunEntry`) its
recipe's label, grid point, values, seed, folder, checkpoint name, description (``run``: what runs it, see
``ttm_torchdistill.description``), command line, state, best validation top-1, error and lockstep group (``group``:
the runs of one group trained together; null: alone); with ``--launcher slurm`` also the array's record. `sweep` (to
continue or grow it), `table` and `plot` read it. Files without a ``version`` are version 1; keys this version does
not know are not read.

Version 2 added ``recipes`` (a sweep of several recipes of one pair), ``identity.recipes`` and a run's ``recipe``;
a version-1 file is one recipe's sweep, read as such (its recipe record made from ``recipe``, ``recipe_path`` and the
grid's keys, label ``''``: its runs lie directly under DIR).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import UsageError, one_line
from ..outputs import write_json

__all__ = ['NAME', 'VERSION', 'GridAxis', 'RecipeRecord', 'RunEntry', 'SweepIdentity', 'SweepManifest',
           'manifest_problem', 'read_manifest', 'write_manifest']

NAME = 'sweep.json'
VERSION = 2
_TYPES = {str: 'a string', list: 'a list', dict: 'an object', int: 'an integer'}
TOP = (('identity', dict), ('recipe', str), ('overrides', list), ('grid', list), ('seeds', list), ('runs', list))
RUN = (('point', str), ('values', dict), ('seed', int), ('dir', str), ('ckpt', str))


def _json(value: object) -> object:
    """A record's value as JSON: records by their ``to_json``, tuples as lists."""
    if isinstance(value, tuple | list):
        return [_json(v) for v in value]
    return value.to_json() if hasattr(value, 'to_json') else value


class _Record:
    """A record of the manifest: its JSON object's fields in order, and read by field name as that object is."""

    def to_json(self) -> dict:
        return {f.name: _json(getattr(self, f.name)) for f in fields(self)}

    def __getitem__(self, name: str) -> Any:
        if name not in {f.name for f in fields(self)}:
            raise KeyError(name)
        return getattr(self, name)


@dataclass(frozen=True)
class SweepIdentity(_Record):
    """What makes two sweeps one sweep, which a re-run must match (it may add grid values and seeds, and give the
    recipes in another order). Older manifests recorded the grid's values and the seeds here too; they are not
    read."""

    recipe_path: str | None
    """the first recipe's file"""
    overrides: list[str] | None
    grid: tuple[tuple[str | None, str | None], ...]
    """each --grid option's name as given and its --set key (None with several recipes: each has its own)"""
    recipes: tuple[str | None, ...] = ()
    """every recipe's file (version 1: the one of ``recipe_path``)"""

    def to_json(self) -> dict:
        return {'recipe_path': self.recipe_path, 'overrides': self.overrides,
                'grid': [{'name': name, 'key': key} for name, key in self.grid], 'recipes': list(self.recipes)}

    @classmethod
    def from_json(cls, data: dict) -> SweepIdentity:
        grid = data.get('grid') if isinstance(data.get('grid'), list) else []
        axes = tuple((a.get('name'), a.get('key')) for a in grid if isinstance(a, dict))
        recipes = data.get('recipes')
        recipes = tuple(recipes) if isinstance(recipes, list) else (data.get('recipe_path'),)
        return cls(data.get('recipe_path'), data.get('overrides'), axes, recipes)

    def differences(self, other: SweepIdentity) -> list[str]:
        """What of ``other`` differs from this, as the command line names it."""
        several = len(self.recipes) > 1 or len(other.recipes) > 1

        def grid(identity: SweepIdentity) -> tuple:  # several recipes: each has its own keys
            return tuple(name for name, _ in identity.grid) if several else identity.grid

        parts = (('recipes' if several else 'recipe', sorted(map(str, self.recipes)), sorted(map(str, other.recipes))),
                 ('--set overrides', self.overrides, other.overrides), ('--grid names', grid(self), grid(other)))
        return [what for what, mine, theirs in parts if mine != theirs]


@dataclass(frozen=True)
class GridAxis(_Record):
    """One --grid option: its name as given, its --set key, its label (table column, folder name) and values."""

    name: str | None
    key: str
    label: str
    values: tuple[str, ...]
    """YAML scalars as given"""


@dataclass(frozen=True)
class RecipeRecord(_Record):
    """One recipe of the sweep."""

    label: str
    """the folder of its runs under DIR, and its name in the table; '' in a one-recipe sweep (its runs lie directly
    under DIR)"""
    recipe: str
    """as given (a file or a shipped name)"""
    recipe_path: str | None
    keys: tuple[str, ...]
    """each grid axis's --set key in this recipe, in the grid's order"""
    paper_top1: float | None = None
    """the top-1 the paper reports (the recipe's ``paper.top1``), if any"""


@dataclass(frozen=True)
class RunEntry(_Record):
    """One run of the sweep. Read from a file, what :func:`manifest_problem` does not check is as written."""

    point: str
    """the grid point's folder name"""
    values: dict[str, str]
    """axis label -> value as given"""
    seed: int
    dir: str
    """the run's folder, relative to the sweep's"""
    ckpt: str
    """the best checkpoint's file name"""
    run: object = None
    """the run's description as JSON (``RunDescription.to_json``); checked where it is used
    (``sweep.runfolder.recorded_description``)"""
    command: str | None = None
    state: str | None = None
    """finished | failed | interrupted | pending, when the manifest was written"""
    best_val_top1: float | None = None
    error: str | None = None
    group: str | None = None
    """the lockstep group it trains in; None: alone"""
    recipe: str | None = None
    """its recipe's label (:attr:`RecipeRecord.label`); None in a one-recipe sweep"""


@dataclass(frozen=True, kw_only=True)
class SweepManifest(_Record):
    """A sweep's manifest; :meth:`to_json` writes its fields in this order (``slurm`` only where there is one)."""

    version: int = VERSION
    identity: SweepIdentity
    recipe: str
    """as given (a file or a shipped name)"""
    recipe_path: str | None
    overrides: tuple[str, ...]
    grid: tuple[GridAxis, ...]
    seeds: tuple[int, ...]
    runs: tuple[RunEntry, ...]
    recipes: tuple[RecipeRecord, ...]
    slurm: dict | None = None
    """the SLURM array's record (``sweep.slurm``: job id, parameters, tasks)"""

    @property
    def several(self) -> bool:
        """Whether the sweep has several recipes (their runs in a folder each)."""
        return len(self.recipes) > 1

    def recipe_record(self, label: str | None) -> RecipeRecord:
        """The record of the recipe labelled ``label`` (a run's ``recipe``; None: the one recipe)."""
        return next(r for r in self.recipes if r.label == (label or ''))

    def to_json(self) -> dict:
        data = super().to_json()
        if self.slurm is None:
            del data['slurm']
        return data

    @property
    def slurm_array(self) -> str | None:
        """The id of the SLURM job array the sweep was submitted as, if any."""
        return self.slurm.get('job_id') if self.slurm else None

    @classmethod
    def from_json(cls, data: object) -> SweepManifest:
        """The manifest :meth:`to_json` (or an earlier version) wrote; one UsageError line saying what differs."""
        problem = manifest_problem(data)
        if problem:
            raise UsageError(f'not a {NAME} written by `ttm-distill sweep` ({problem})')
        axes = tuple(GridAxis(a.get('name'), a['key'], a['label'], tuple(a['values'])) for a in data['grid'])
        runs = tuple(RunEntry(**{f.name: entry.get(f.name) for f in fields(RunEntry)}) for entry in data['runs'])
        if 'recipes' in data:
            recipes = tuple(RecipeRecord(r['label'], r['recipe'], r.get('recipe_path'), tuple(r['keys']),
                                         r.get('paper_top1')) for r in data['recipes'])
        else:  # version 1: one recipe
            recipes = (RecipeRecord('', data['recipe'], data.get('recipe_path'), tuple(a.key for a in axes)),)
        return cls(version=data.get('version', 1), identity=SweepIdentity.from_json(data['identity']),
                   recipe=data['recipe'], recipe_path=data.get('recipe_path'), overrides=tuple(data['overrides']),
                   grid=axes, seeds=tuple(data['seeds']), runs=runs, recipes=recipes, slurm=data.get('slurm'))


def manifest_problem(data: object) -> str | None:
    """What in ``data`` differs from the structure `ttm-distill sweep` writes, or None."""
    if not isinstance(data, dict):
        return f'the top level is {type(data).__name__}, not an object'
    version = data.get('version', 1)
    if not isinstance(version, int) or isinstance(version, bool) or version > VERSION:
        return f'version={version!r}: this ttm-distill reads versions up to {VERSION}'
    for key, kind in TOP:
        if not isinstance(data.get(key), kind):
            return f'{key!r} is missing or not {_TYPES[kind]}'
    slurm = data.get('slurm')
    if slurm is not None and not (isinstance(slurm, dict) and isinstance(slurm.get('job_id'), str | None)):
        return "'slurm' is not an object with a string job_id"
    if not all(isinstance(o, str) for o in data['overrides']):
        return "'overrides' holds something other than KEY=VALUE strings"
    labels = []
    for i, axis in enumerate(data['grid']):
        if not isinstance(axis, dict) or not all(isinstance(axis.get(k), str) for k in ('key', 'label')) \
                or not isinstance(axis.get('values'), list):
            return f'grid[{i}] is not an object with a string key and label and a list of values'
        labels.append(axis['label'])
    recipes = _recipes_problem(data, len(labels))
    if isinstance(recipes, str):
        return recipes
    for i, run in enumerate(data['runs']):
        if not isinstance(run, dict):
            return f'runs[{i}] is not an object'
        for key, kind in RUN:
            if not isinstance(run.get(key), kind) or (kind is int and isinstance(run.get(key), bool)):
                return f'runs[{i}].{key} is missing or not {_TYPES[kind]}'
        folder = PurePosixPath(run['dir'])
        if folder.is_absolute() or not folder.parts or '..' in folder.parts:
            return f'runs[{i}].dir={run["dir"]!r}: expected a folder inside the sweep folder'
        if '/' in run['ckpt'] or run['ckpt'] in ('', '.', '..'):
            return f'runs[{i}].ckpt={run["ckpt"]!r}: expected a file name'
        missing = [label for label in labels if label not in run['values']]
        if missing:
            return f'runs[{i}].values has no {missing[0]!r} (a grid label)'
        if (run.get('recipe') or '') not in recipes:
            return f'runs[{i}].recipe={run.get("recipe")!r} is not the label of one of the recipes'
    return None


def _recipes_problem(data: dict, axes: int) -> str | set[str]:
    """What in ``data['recipes']`` (version 2) differs from what `ttm-distill sweep` writes, else the labels (version
    1: the one recipe's, '')."""
    if 'recipes' not in data:
        return {''}
    recipes = data['recipes']
    if not isinstance(recipes, list) or not recipes:
        return "'recipes' is not a list of recipes"
    labels = set()
    for i, recipe in enumerate(recipes):
        if not isinstance(recipe, dict) or not all(isinstance(recipe.get(k), str) for k in ('label', 'recipe')) \
                or not isinstance(recipe.get('keys'), list) or len(recipe['keys']) != axes \
                or not all(isinstance(k, str) for k in recipe['keys']):
            return f'recipes[{i}] is not an object with a string label and recipe and a key per grid axis'
        label = recipe['label']
        if label in labels or (label == '') != (len(recipes) == 1) or '/' in label or label in ('.', '..'):
            return f"recipes[{i}].label={label!r}: expected a folder name of its own ('' for a sweep's one recipe)"
        labels.add(label)
    return labels


def read_manifest(directory: Path) -> SweepManifest:
    """DIR's sweep.json, checked to be one `ttm-distill sweep` wrote (else one UsageError line naming it)."""
    path = directory / NAME
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f'{directory}: not a sweep folder (no {NAME})') from None
    except (OSError, ValueError) as exc:
        raise UsageError(f'{path}: unreadable ({one_line(exc)})') from None
    try:
        return SweepManifest.from_json(data)
    except UsageError as exc:
        raise UsageError(f'{path}: {exc}') from None


def write_manifest(directory: Path, manifest: SweepManifest) -> None:
    """Write DIR/sweep.json atomically."""
    write_json(directory / NAME, manifest.to_json())
