"""A sweep's plan: its recipes (:mod:`.recipes`) x the grid of recipe values x seeds, checked on each recipe, and one
run description per recipe, point and seed, each run in its folder (:mod:`.runfolder`): ``DIR/<point>/seed<k>/`` for a
sweep of one recipe, ``DIR/<recipe label>/<point>/seed<k>/`` (without a grid ``DIR/<recipe label>/seed<k>/``) for one
of several. Runs skip the test pass: points are chosen on validation only."""
from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..description import Override, RunDescription
from ..errors import UsageError, one_line
from ..formats.manifest import NAME as MANIFEST
from ..formats.manifest import SweepIdentity, SweepManifest
from ..methods import method_by_loss, short_names
from ..recipe import SUB_TERMS, LossTerm, RecipeDocument, compose_scalar
from ..runner import tensorboard
from .recipes import SweepRecipe, check_one_pair, folder_name, label_recipes, open_recipes
from .runfolder import OUTPUT_KEY, RunFolder

__all__ = ['Axis', 'Sweep', 'SweepRun', 'parse_grid', 'plan_sweep']


@dataclass
class Axis:
    name: str
    """as given: a short name or a full key (each recipe's full key: :attr:`SweepRecipe.keys`)"""
    values: list[str]
    """YAML scalars as given"""
    nodes: list = field(default_factory=list)
    """the values composed once, in order"""
    label: str = ''
    """short column and folder name"""


@dataclass
class SweepRun(RunFolder):
    """A run of the plan: its folder and what runs it."""

    description: RunDescription = None
    """a fresh run's description (:meth:`argv` resumes from ``.last.pt`` where there is one)"""
    tensorboard_dir: Path | None = None
    epochs: int | None = None
    """the run's train.num_epochs (for progress lines)"""
    hparams: dict = field(default_factory=dict)
    """axis label -> the value as a Python scalar (TensorBoard's hparams)"""
    group: str | None = None
    """the lockstep group it trains in (``.jobs``), None alone"""

    def argv(self) -> list[str]:
        """Arguments after `ttm-distill` for this run now: resumes when its .last.pt exists."""
        return self.description.replace(resume=self.last_ckpt.is_file()).argv()


@dataclass
class Sweep:
    recipes: list[SweepRecipe]
    """one, or several of one teacher-student pair"""
    overrides: list[str]
    axes: list[Axis]
    seeds: list[int]
    directory: Path
    runs: list[SweepRun]
    slurm: dict | None = None
    """the SLURM array record kept in sweep.json (job id, parameters, tasks)"""
    earlier: SweepManifest | None = None
    """DIR's manifest when the plan was made (an earlier sweep it continues), or None"""

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST

    @property
    def several(self) -> bool:
        """Whether the sweep has several recipes (their runs in a folder each)."""
        return len(self.recipes) > 1

    def identity(self) -> SweepIdentity:
        """What makes two sweeps the same sweep (a re-run must match it: more values and seeds may be added)."""
        first = self.recipes[0]
        grid = tuple((a.name, None if self.several else key) for a, key in zip(self.axes, first.keys, strict=True))
        return SweepIdentity(str(first.path), self.overrides, grid, tuple(str(r.path) for r in self.recipes))


def _resolve_key(name: str, doc: RecipeDocument) -> str:
    """A short name's full key: the parameter of the one term of the losses that have it (in a WTTM + ITRD recipe
    ``gamma`` and ``beta`` reach the WTTM term, ``beta_corr`` the ITRD term; a feature method's ``beta`` is its term's
    ``weight``; the methods say which names they have: ``ttm_torchdistill.methods``)."""
    names = short_names()
    if name not in names:
        return name
    path, owners = doc.source, names[name]
    terms = [t for t in doc.loss_terms() if t.key in owners]
    if not terms:
        raise UsageError(f'--grid {name}: {path} has no {", ".join(owners[:-1])}{" or " if owners[1:] else ""}'
                         f'{owners[-1]} term under {SUB_TERMS} ({name} is a parameter of '
                         f'{"/".join(owners)}); give the full key of the value to sweep instead')
    setting = [t for t in terms if method_by_loss(t.key).sets(name, t.kwargs)]
    if len(setting) > 1:
        names = ', '.join(f'{t.name} ({t.key})' for t in setting)
        raise UsageError(f'--grid {name}: {path} has several loss terms that set it ({names}); give the full key, '
                         f'e.g. {_term_key(setting[0], name)}')
    if not setting:
        sets = '; '.join(f'the {t.key} term {t.name!r} does not set {name!r} (it sets: '
                         f'{", ".join(t.kwargs) or "nothing"})' for t in terms)
        raise UsageError(f'--grid {name}: {sets}; add it to that term in {path} or give another name')
    return _term_key(setting[0], name)


def _term_key(term: LossTerm, name: str) -> str:
    """The full key that short name ``name`` reaches in ``term``: its weight or a parameter of its loss."""
    param = method_by_loss(term.key).param(name)
    return f'{term.path}.weight' if param is None else term.param_path(param)


def parse_grid(specs: list[str], required: bool = True) -> list[Axis]:
    """``NAME=V1,V2,...`` options to axes (values are YAML scalars, composed here once); none: a UsageError where
    ``required`` (a sweep of one recipe)."""
    if not specs and required:
        raise UsageError('sweep: no --grid given: add at least one --grid NAME=V1,V2,... (e.g. --grid gamma=0.1,0.2)')
    axes = []
    for spec in specs:
        name, sep, text = spec.partition('=')
        name = name.strip()
        values = [v.strip() for v in text.split(',')]
        if not sep or not name or not all(k.strip() for k in name.split('.')):
            raise UsageError(f'--grid {spec!r}: expected NAME=V1,V2,... with NAME one of '
                             f'{", ".join(short_names())} or a full --set key')
        if not all(values):
            raise UsageError(f'--grid {spec!r}: empty value; expected comma-separated YAML scalars such as 0.1,0.2')
        nodes = [compose_scalar(value, f'--grid {name}') for value in values]
        if len(set(values)) < len(values):
            raise UsageError(f'--grid {spec!r}: a value is repeated')
        if any(a.name == name for a in axes):
            raise UsageError(f'--grid {name}: given twice; list all its values in one --grid')
        axes.append(Axis(name, values, nodes))
    return axes


def _labels(axes: list[Axis]) -> None:
    """Short names stay; a full key is named by its last part unless two axes would share it."""
    last = [a.name.split('.')[-1] for a in axes]
    for axis, tail in zip(axes, last, strict=True):
        axis.label = axis.name if axis.name in short_names() else (tail if last.count(tail) == 1 else axis.name)


def _check_losses(doc: RecipeDocument, point: str) -> None:
    """Build the point's loss terms of this package so a value out of range is refused before anything runs
    (``point``: how the refusal names the point, e.g. ``--grid gamma=0.5``)."""
    for term in doc.loss_terms():
        method = method_by_loss(term.key)
        cls = method.loss_class if method is not None else None
        if cls is None:
            continue
        try:
            cls(**term.kwargs)
        except (TypeError, ValueError) as exc:
            raise UsageError(f'{point}: {term.key} term {term.name!r}: {one_line(exc)}') from None


def _refuse_outputs(keys: str, flag: str) -> None:
    """A sweep places every run's outputs itself; a user's output path would make runs share one file."""
    if OUTPUT_KEY in keys.split('.'):
        raise UsageError(f'{flag} {keys}: a sweep puts each run\'s checkpoints, logs and summary under -o DIR '
                         f'(DIR/<point>/seed<k>/), so it sets {OUTPUT_KEY} itself; leave it out')


def plan_sweep(recipes: str | Sequence[str], grid: list[str], seeds: list[int], overrides: list[str],
               output: str | os.PathLike, earlier: Callable[[Sweep], SweepManifest | None] | None = None) -> Sweep:
    """Check everything and list the runs; touches nothing on disk. ``recipes``: one (a file or a shipped name, alone
    or in a list; it needs a grid), or several of one teacher-student pair (without a grid each is one point; with
    one, each recipe has the grid's points; a short name must reach a term in each). ``earlier``: DIR's manifest for
    the sweep before its runs are listed (``folder.check_directory``, which refuses another sweep), or None: over an
    earlier sweep of the same recipes, --set and --grid names the plan is the union of both (its recipes' order,
    values and seeds first, then the new ones), and its runs keep their lockstep groups. The recipes and the grid are
    read once."""
    specs = [recipes] if isinstance(recipes, str) else list(recipes)
    if not specs:
        raise UsageError('sweep: give at least one recipe')
    axes = parse_grid(grid, required=len(specs) == 1)
    if not seeds:
        raise UsageError('--seeds: give at least one seed')
    if len(set(seeds)) < len(seeds):
        raise UsageError(f'--seeds {" ".join(map(str, seeds))}: a seed is repeated')
    given = [Override.parse(o) for o in overrides]
    for override in given:
        _refuse_outputs(override.key, '--set')
    for axis in axes:
        _refuse_outputs(axis.name, '--grid')
    chosen = open_recipes(specs, given)
    check_one_pair(chosen)
    for recipe in chosen:
        recipe.keys = [_resolve_key(axis.name, recipe.doc) for axis in axes]
        if len(set(recipe.keys)) < len(axes):
            raise UsageError('--grid: two names resolve to the same key ' + ', '.join(recipe.keys))
    _labels(axes)
    label_recipes(chosen)
    sweep = Sweep(chosen, list(overrides), axes, list(seeds), Path(output).expanduser().resolve(), [])
    sweep.earlier = earlier(sweep) if earlier is not None else None
    if sweep.earlier is not None:
        _grow(sweep, sweep.earlier)
    tensorboard_curves = tensorboard.available()
    sweep.runs = [run for recipe in sweep.recipes for run in _recipe_runs(sweep, recipe, given, tensorboard_curves)]
    groups = {(e.point, e.seed): e.group for e in sweep.earlier.runs} if sweep.earlier is not None else {}
    for run in sweep.runs:
        run.group = groups.get((run.point, run.seed))
    return sweep


def _recipe_runs(sweep: Sweep, recipe: SweepRecipe, given: list[Override], tensorboard_curves: bool) -> list[SweepRun]:
    """The runs of one recipe: a point of the grid (one, without a grid) x the seeds, each in
    ``DIR/[<recipe label>/][<point>/]seed<k>/``."""
    axes, doc, directory = sweep.axes, recipe.doc, sweep.directory
    runs, folders = [], set()
    for point_values in itertools.product(*(zip(a.values, a.nodes, strict=True) for a in axes)):
        values = [value for value, _ in point_values]
        for key, (_, node) in zip(recipe.keys, point_values, strict=True):
            try:
                doc.set(key, node)
            except UsageError as exc:
                raise UsageError(str(exc).replace('--set ', '--grid ', 1)) from None
        point = '_'.join(folder_name(f'{a.label}{v}') for a, v in zip(axes, values, strict=True))
        if axes:
            named = ' '.join(f'{a.label}={v}' for a, v in zip(axes, values, strict=True))
            _check_losses(doc, f'--grid {named}' + (f' in {recipe.given}' if sweep.several else ''))
        epochs = doc.value('train.num_epochs')
        hparams = {a.label: _scalar(doc.construct(node), value)
                   for a, (value, node) in zip(axes, point_values, strict=True)}
        if sweep.several:
            hparams = {'recipe': recipe.label, **hparams}
        if point in folders:
            raise UsageError(f'--grid: two points share the folder name {point!r}; use simpler values')
        folders.add(point)
        where = '/'.join(part for part in (recipe.label, point) if part)
        for seed in sweep.seeds:
            tb_dir = directory / 'tensorboard' / where / f'seed{seed}' if tensorboard_curves else None
            run = SweepRun(where, {a.label: v for a, v in zip(axes, values, strict=True)}, seed,
                           directory / where / f'seed{seed}', recipe.ckpt_name, recipe.label or None,
                           tensorboard_dir=tb_dir, epochs=epochs if isinstance(epochs, int) else None, hparams=hparams)
            run.description = RunDescription(
                recipe=str(recipe.path), seed=seed, run_log=str(run.log_path), summary=str(run.summary_path),
                test=False, error_record=str(run.error_path), tensorboard=str(tb_dir) if tb_dir is not None else None,
                overrides=(Override(recipe.dst_key, str(run.directory / recipe.ckpt_name)), *given,
                           *(Override(key, v) for key, v in zip(recipe.keys, values, strict=True))))
            runs.append(run)
    return runs


def _grow(sweep: Sweep, earlier: SweepManifest) -> None:
    """The earlier sweep's recipes (in its order, with its labels), grid values and seeds first, then the new ones
    (composed once)."""
    places = {r.recipe_path: (i, r.label) for i, r in enumerate(earlier.recipes)}
    for recipe in sweep.recipes:
        recipe.label = places.get(str(recipe.path), (0, recipe.label))[1]
    sweep.recipes.sort(key=lambda r: places.get(str(r.path), (len(places), ''))[0])
    for axis, recorded in zip(sweep.axes, earlier.grid, strict=True):
        new = [(v, n) for v, n in zip(axis.values, axis.nodes, strict=True) if v not in recorded.values]
        axis.nodes = [compose_scalar(v, f'--grid {axis.name}') for v in recorded.values] + [n for _, n in new]
        axis.values = [*recorded.values, *(v for v, _ in new)]
    known = [s for s in earlier.seeds if isinstance(s, int)]
    sweep.seeds = [*known, *(s for s in sweep.seeds if s not in known)]


def _scalar(value: object, text: str) -> object:
    """A grid value for TensorBoard's hparams: the Python scalar the recipe gets, else its text."""
    return value if isinstance(value, (int, float, str, bool)) else text
