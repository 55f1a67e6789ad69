"""A sweep's plan: the grid of recipe values x seeds, checked on the recipe, and one run description per point and
seed, each run in its folder ``DIR/<point>/seed<k>/`` (:mod:`.runfolder`). Runs skip the test pass: points are chosen
on validation only."""
from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..description import Override, RunDescription
from ..errors import UsageError, one_line
from ..formats.manifest import NAME as MANIFEST
from ..formats.manifest import SweepIdentity, SweepManifest
from ..methods import method_by_loss, short_names
from ..recipe import SUB_TERMS, RecipeDocument, RecipeView, compose_scalar, parse_overrides, resolve_recipe
from ..runner import tensorboard
from .runfolder import OUTPUT_KEY, RunFolder

__all__ = ['Axis', 'Sweep', 'SweepRun', 'parse_grid', 'plan_sweep']


@dataclass
class Axis:
    name: str
    """as given: a short name or a full key"""
    key: str
    """the full --set key"""
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
    recipe: str
    """as given (a file or a shipped name)"""
    recipe_path: Path
    overrides: list[str]
    axes: list[Axis]
    seeds: list[int]
    directory: Path
    runs: list[SweepRun]
    val_is_test: bool
    dst_key: str
    """the key of the student's dst_ckpt, which the sweep sets per run"""
    slurm: dict | None = None
    """the SLURM array record kept in sweep.json (job id, parameters, tasks)"""
    earlier: SweepManifest | None = None
    """DIR's manifest when the plan was made (an earlier sweep it continues), or None"""

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST

    def identity(self) -> SweepIdentity:
        """What makes two sweeps the same sweep (a re-run must match it: more values and seeds may be added)."""
        return SweepIdentity(str(self.recipe_path), self.overrides, tuple((a.name, a.key) for a in self.axes))


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
                         f'e.g. {setting[0].param_path(name)}')
    if not setting:
        sets = '; '.join(f'the {t.key} term {t.name!r} does not set {name!r} (it sets: '
                         f'{", ".join(t.kwargs) or "nothing"})' for t in terms)
        raise UsageError(f'--grid {name}: {sets}; add it to that term in {path} or give another name')
    term = setting[0]
    return f'{term.path}.weight' if name == method_by_loss(term.key).weight_name else term.param_path(name)


def parse_grid(specs: list[str]) -> list[Axis]:
    """``NAME=V1,V2,...`` options to axes (values are YAML scalars, composed here once)."""
    if not specs:
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
        axes.append(Axis(name, name, values, nodes))
    return axes


def _labels(axes: list[Axis]) -> None:
    """Short names stay; a full key is named by its last part unless two axes would share it."""
    last = [a.key.split('.')[-1] for a in axes]
    for axis, tail in zip(axes, last, strict=True):
        axis.label = axis.name if axis.name in short_names() else (tail if last.count(tail) == 1 else axis.key)


def _folder(label: str, value: str) -> str:
    return re.sub(r'[^A-Za-z0-9._+-]', '-', f'{label}{value}')


def _check_losses(doc: RecipeDocument, point: str) -> None:
    """Build the point's loss terms of this package so a value out of range is refused before anything runs."""
    for term in doc.loss_terms():
        method = method_by_loss(term.key)
        cls = method.loss_class if method is not None else None
        if cls is None:
            continue
        try:
            cls(**term.kwargs)
        except (TypeError, ValueError) as exc:
            raise UsageError(f'--grid {point}: {term.key} term {term.name!r}: {one_line(exc)}') from None


def _refuse_outputs(keys: str, flag: str) -> None:
    """A sweep places every run's outputs itself; a user's output path would make runs share one file."""
    if OUTPUT_KEY in keys.split('.'):
        raise UsageError(f'{flag} {keys}: a sweep puts each run\'s checkpoints, logs and summary under -o DIR '
                         f'(DIR/<point>/seed<k>/), so it sets {OUTPUT_KEY} itself; leave it out')


def plan_sweep(recipe: str, grid: list[str], seeds: list[int], overrides: list[str], output: str | os.PathLike,
               earlier: Callable[[Sweep], SweepManifest | None] | None = None) -> Sweep:
    """Check everything and list the runs; touches nothing on disk. ``earlier``: DIR's manifest for the sweep before
    its runs are listed (``folder.check_directory``, which refuses another sweep), or None: over an earlier sweep of
    the same recipe, --set and --grid names the plan is the union of both (its values and seeds first, then the new
    ones), and its runs keep their lockstep groups. The recipe and the grid are read once."""
    axes = parse_grid(grid)
    if not seeds:
        raise UsageError('--seeds: give at least one seed')
    if len(set(seeds)) < len(seeds):
        raise UsageError(f'--seeds {" ".join(map(str, seeds))}: a seed is repeated')
    given = [Override.parse(o) for o in overrides]
    for override in given:
        _refuse_outputs(override.key, '--set')
    for axis in axes:
        _refuse_outputs(axis.name, '--grid')
    path = resolve_recipe(recipe).resolve()
    doc = RecipeDocument.open(path, parse_overrides(given))
    doc.import_dependencies()  # a plugin's methods, and their short names
    view = RecipeView(doc)
    for axis in axes:
        axis.key = _resolve_key(axis.name, doc)
    if len({a.key for a in axes}) < len(axes):
        raise UsageError('--grid: two names resolve to the same key ' + ', '.join(a.key for a in axes))
    _labels(axes)
    dst_key = f'models.{view.student_key}.{OUTPUT_KEY}'
    if not isinstance(view.dst_ckpt, str) or not view.dst_ckpt:
        raise UsageError(f'{path}: {dst_key} is required')
    ckpt_name = Path(view.dst_ckpt).name
    directory = Path(output).expanduser().resolve()
    sweep = Sweep(recipe, path, list(overrides), axes, list(seeds), directory, [], view.val_is_test, dst_key)
    sweep.earlier = earlier(sweep) if earlier is not None else None
    if sweep.earlier is not None:
        _grow(sweep, sweep.earlier)
    seeds = sweep.seeds
    tensorboard_curves = tensorboard.available()
    runs, folders = [], set()
    for point_values in itertools.product(*(zip(a.values, a.nodes, strict=True) for a in axes)):
        values = [value for value, _ in point_values]
        for axis, (_, node) in zip(axes, point_values, strict=True):
            try:
                doc.set(axis.key, node)
            except UsageError as exc:
                raise UsageError(str(exc).replace('--set ', '--grid ', 1)) from None
        point = '_'.join(_folder(a.label, v) for a, v in zip(axes, values, strict=True))
        _check_losses(doc, ' '.join(f'{a.label}={v}' for a, v in zip(axes, values, strict=True)))
        epochs = doc.value('train.num_epochs')
        hparams = {a.label: _scalar(doc.construct(node), value)
                   for a, (value, node) in zip(axes, point_values, strict=True)}
        if point in folders:
            raise UsageError(f'--grid: two points share the folder name {point!r}; use simpler values')
        folders.add(point)
        for seed in seeds:
            tb_dir = directory / 'tensorboard' / point / f'seed{seed}' if tensorboard_curves else None
            run = SweepRun(point, {a.label: v for a, v in zip(axes, values, strict=True)}, seed,
                           directory / point / f'seed{seed}', ckpt_name, tensorboard_dir=tb_dir,
                           epochs=epochs if isinstance(epochs, int) else None, hparams=hparams)
            run.description = RunDescription(
                recipe=str(path), seed=seed, run_log=str(run.log_path), summary=str(run.summary_path), test=False,
                error_record=str(run.error_path),
                tensorboard=str(tb_dir) if tb_dir is not None else None,
                overrides=(Override(dst_key, str(run.directory / ckpt_name)), *given,
                           *(Override(a.key, v) for a, v in zip(axes, values, strict=True))))
            runs.append(run)
    groups = {(e.point, e.seed): e.group for e in sweep.earlier.runs} if sweep.earlier is not None else {}
    for run in runs:
        run.group = groups.get((run.point, run.seed))
    sweep.runs = runs
    return sweep


def _grow(sweep: Sweep, earlier: SweepManifest) -> None:
    """The earlier sweep's grid values and seeds first, then the new ones (composed once)."""
    for axis, recorded in zip(sweep.axes, earlier.grid, strict=True):
        new = [(v, n) for v, n in zip(axis.values, axis.nodes, strict=True) if v not in recorded.values]
        axis.nodes = [compose_scalar(v, f'--grid {axis.name}') for v in recorded.values] + [n for _, n in new]
        axis.values = [*recorded.values, *(v for v, _ in new)]
    known = [s for s in earlier.seeds if isinstance(s, int)]
    sweep.seeds = [*known, *(s for s in sweep.seeds if s not in known)]


def _scalar(value: object, text: str) -> object:
    """A grid value for TensorBoard's hparams: the Python scalar the recipe gets, else its text."""
    return value if isinstance(value, (int, float, str, bool)) else text
