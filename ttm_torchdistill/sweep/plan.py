"""A sweep's plan: the grid of recipe values x seeds, checked on the recipe, and one run spec per point and seed.

Each run lives in ``DIR/<point>/seed<k>/``, and its state is read from that folder: ``summary.json``
(finished, when readable), ``error.txt`` (failed), a ``.last.pt`` checkpoint (interrupted: the next call resumes
it), else pending. Runs skip the test pass: points are chosen on validation only.
"""
from __future__ import annotations

import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import UsageError, one_line
from ..losses import ITRDLoss, TTMLoss, WTTMLoss
from ..recipe import SUB_TERMS, RecipeDocument, parse_overrides, resolve_recipe
from ..runner import tensorboard
from ..runner.checkpoint import last_ckpt_path

__all__ = ['SHORT_NAMES', 'Axis', 'RunSpec', 'Sweep', 'parse_grid', 'plan_sweep']

LOGIT_LOSSES = ('TTMLoss', 'WTTMLoss', 'KDLoss')
SHORT_NAMES = {'gamma': ('TTMLoss', 'WTTMLoss'), 'beta': LOGIT_LOSSES, 'alpha': LOGIT_LOSSES,
               'temperature': LOGIT_LOSSES, 'beta_corr': ('ITRDLoss',), 'beta_mi': ('ITRDLoss',),
               'alpha_it': ('ITRDLoss',)}
"""--grid short names -> the loss terms whose parameter they name"""
LOSS_CLASSES = {'TTMLoss': TTMLoss, 'WTTMLoss': WTTMLoss, 'KDLoss': None, 'ITRDLoss': ITRDLoss}
"""the loss terms whose parameters short names reach (a class: its values are checked before anything runs)"""
MANIFEST = 'sweep.json'
OUTPUT_KEY = 'dst_ckpt'


@dataclass
class Axis:
    name: str
    """as given: a short name or a full key"""
    key: str
    """the full --set key"""
    values: list[str]
    """YAML scalars as given"""
    label: str = ''
    """short column and folder name"""


@dataclass
class RunSpec:
    point: str
    """the grid point's folder name"""
    values: dict[str, str]
    """axis label -> value as given"""
    seed: int
    directory: Path
    ckpt_name: str
    args: list[str]
    """`ttm-distill` arguments of a fresh run (a resumed one adds --resume)"""
    tensorboard_dir: Path | None = None
    epochs: int | None = None
    """the run's train.num_epochs (for progress lines)"""

    @property
    def name(self) -> str:
        return f'{self.point}/seed{self.seed}'

    @property
    def summary_path(self) -> Path:
        return self.directory / 'summary.json'

    @property
    def error_path(self) -> Path:
        return self.directory / 'error.txt'

    @property
    def output_path(self) -> Path:
        return self.directory / 'output.log'

    @property
    def log_path(self) -> Path:
        return self.directory / 'run.log'

    @property
    def metrics_path(self) -> Path:
        return self.directory / 'run.metrics.jsonl'

    def epochs_done(self) -> int:
        """Epochs recorded in the run's metrics file so far."""
        try:
            return sum(1 for line in self.metrics_path.read_text(errors='replace').splitlines() if line.strip())
        except OSError:
            return 0

    @property
    def last_ckpt(self) -> Path:
        return last_ckpt_path(self.directory / self.ckpt_name)

    def describe(self) -> str:
        return ' '.join(f'{k}={v}' for k, v in self.values.items()) + f' seed {self.seed}'

    def command(self) -> list[str]:
        """Arguments after `ttm-distill` for this run now: resumes when its .last.pt exists."""
        return self.args + (['--resume'] if self.last_ckpt.is_file() else [])

    def state(self) -> tuple[str, float | None, str | None]:
        """(finished | failed | interrupted | pending, best val top-1, error line); a cut-off or corrupt
        summary.json does not count as finished, so the run is redone or resumed."""
        if self.summary_path.is_file():
            try:
                summary = json.loads(self.summary_path.read_text())
            except (OSError, ValueError):
                summary = None
            if isinstance(summary, dict):
                return 'finished', summary.get('best_val_top1'), None
        if self.error_path.is_file():
            return 'failed', None, self.error_path.read_text(errors='replace').strip()
        return ('interrupted' if self.last_ckpt.is_file() else 'pending'), None, None


@dataclass
class Sweep:
    recipe: str
    """as given (a file or a shipped name)"""
    recipe_path: Path
    overrides: list[str]
    axes: list[Axis]
    seeds: list[int]
    directory: Path
    runs: list[RunSpec]
    val_is_test: bool
    slurm: dict | None = None
    """the SLURM array record kept in sweep.json (job id, parameters, tasks)"""

    @property
    def manifest_path(self) -> Path:
        return self.directory / MANIFEST

    def identity(self) -> dict:
        """What makes two sweeps the same sweep (a re-run must match it: more values and seeds may be added)."""
        return {'recipe_path': str(self.recipe_path), 'overrides': self.overrides,
                'grid': [{'name': a.name, 'key': a.key} for a in self.axes]}



def _resolve_key(name: str, doc: RecipeDocument) -> str:
    """A short name's full key: the parameter of the one term of the losses that have it (in a WTTM + ITRD recipe
    ``gamma`` and ``beta`` reach the WTTM term, ``beta_corr`` the ITRD term)."""
    if name not in SHORT_NAMES:
        return name
    path, owners = doc.source, SHORT_NAMES[name]
    terms = [t for t in doc.loss_terms() if t.key in owners]
    if not terms:
        raise UsageError(f'--grid {name}: {path} has no {", ".join(owners[:-1])}{" or " if owners[1:] else ""}'
                         f'{owners[-1]} term under {SUB_TERMS} ({name} is a parameter of '
                         f'{"/".join(owners)}); give the full key of the value to sweep instead')
    setting = [t for t in terms if name in t.kwargs]
    if len(setting) > 1:
        names = ', '.join(f'{t.name} ({t.key})' for t in setting)
        raise UsageError(f'--grid {name}: {path} has several loss terms that set it ({names}); give the full key, '
                         f'e.g. {setting[0].param_path(name)}')
    if not setting:
        sets = '; '.join(f'the {t.key} term {t.name!r} does not set {name!r} (it sets: '
                         f'{", ".join(t.kwargs) or "nothing"})' for t in terms)
        raise UsageError(f'--grid {name}: {sets}; add it to that term in {path} or give another name')
    return setting[0].param_path(name)


def parse_grid(specs: list[str]) -> list[Axis]:
    """``NAME=V1,V2,...`` options to axes (values are YAML scalars)."""
    if not specs:
        raise UsageError('sweep: no --grid given: add at least one --grid NAME=V1,V2,... (e.g. --grid gamma=0.1,0.2)')
    axes = []
    for spec in specs:
        name, sep, text = spec.partition('=')
        name = name.strip()
        values = [v.strip() for v in text.split(',')]
        if not sep or not name or not all(k.strip() for k in name.split('.')):
            raise UsageError(f'--grid {spec!r}: expected NAME=V1,V2,... with NAME one of {", ".join(SHORT_NAMES)} '
                             'or a full --set key')
        if not all(values):
            raise UsageError(f'--grid {spec!r}: empty value; expected comma-separated YAML scalars such as 0.1,0.2')
        for value in values:
            try:
                node = yaml.compose(value, Loader=yaml.FullLoader)
            except yaml.YAMLError as exc:
                raise UsageError(f'--grid {name}: {value!r} is not valid YAML ({one_line(exc)})') from None
            if not isinstance(node, yaml.ScalarNode):
                raise UsageError(f'--grid {name}: {value!r} is not a YAML scalar (one value per comma)')
        if len(set(values)) < len(values):
            raise UsageError(f'--grid {spec!r}: a value is repeated')
        if any(a.name == name for a in axes):
            raise UsageError(f'--grid {name}: given twice; list all its values in one --grid')
        axes.append(Axis(name, name, values))
    return axes


def _labels(axes: list[Axis]) -> None:
    """Short names stay; a full key is named by its last part unless two axes would share it."""
    last = [a.key.split('.')[-1] for a in axes]
    for axis, tail in zip(axes, last, strict=True):
        axis.label = axis.name if axis.name in SHORT_NAMES else (tail if last.count(tail) == 1 else axis.key)


def _folder(label: str, value: str) -> str:
    return re.sub(r'[^A-Za-z0-9._+-]', '-', f'{label}{value}')


def _check_losses(doc: RecipeDocument, point: str) -> None:
    """Build the point's TTM/WTTM loss term so a value out of range is refused before anything runs."""
    for term in doc.loss_terms():
        cls = LOSS_CLASSES.get(term.key)
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


def plan_sweep(recipe: str, grid: list[str], seeds: list[int], overrides: list[str],
               output: str | os.PathLike) -> Sweep:
    """Check everything and list the runs; touches nothing on disk."""
    axes = parse_grid(grid)
    if not seeds:
        raise UsageError('--seeds: give at least one seed')
    if len(set(seeds)) < len(seeds):
        raise UsageError(f'--seeds {" ".join(map(str, seeds))}: a seed is repeated')
    parsed = parse_overrides(list(overrides))
    for keys, _ in parsed:
        _refuse_outputs('.'.join(keys), '--set')
    for axis in axes:
        _refuse_outputs(axis.name, '--grid')
    path = resolve_recipe(recipe).resolve()
    doc = RecipeDocument.open(path, parsed)
    for axis in axes:
        axis.key = _resolve_key(axis.name, doc)
    if len({a.key for a in axes}) < len(axes):
        raise UsageError('--grid: two names resolve to the same key ' + ', '.join(a.key for a in axes))
    _labels(axes)
    student_key = doc.student_key
    dst = doc.value(f'models.{student_key}.dst_ckpt')
    if not isinstance(dst, str) or not dst:
        raise UsageError(f'{path}: models.{student_key}.dst_ckpt is required')
    ckpt_name = Path(dst).name
    val = doc.value('train.val_data_loader.dataset_id')
    val_is_test = val is not None and val == doc.value('test.test_data_loader.dataset_id')
    directory = Path(output).expanduser().resolve()
    tensorboard_curves = tensorboard.available()
    runs, folders = [], set()
    for values in itertools.product(*(a.values for a in axes)):
        for axis, value in zip(axes, values, strict=True):
            try:
                doc.set(axis.key, value)
            except UsageError as exc:
                raise UsageError(str(exc).replace('--set ', '--grid ', 1)) from None
        point = '_'.join(_folder(a.label, v) for a, v in zip(axes, values, strict=True))
        desc = ' '.join(f'{a.label}={v}' for a, v in zip(axes, values, strict=True))
        _check_losses(doc, desc)
        epochs = doc.value('train.num_epochs')
        if point in folders:
            raise UsageError(f'--grid: two points share the folder name {point!r}; use simpler values')
        folders.add(point)
        for seed in seeds:
            run_dir = directory / point / f'seed{seed}'
            args = ['train', str(path), '--set', f'models.{student_key}.dst_ckpt={run_dir / ckpt_name}']
            for o in overrides:
                args += ['--set', o]
            for axis, value in zip(axes, values, strict=True):
                args += ['--set', f'{axis.key}={value}']
            args += ['--seed', str(seed), '--run-log', str(run_dir / 'run.log'),
                     '--summary', str(run_dir / 'summary.json'), '--no-test']
            tb_dir = directory / 'tensorboard' / point / f'seed{seed}' if tensorboard_curves else None
            if tb_dir is not None:
                args += ['--tensorboard', str(tb_dir)]
            runs.append(RunSpec(point, {a.label: v for a, v in zip(axes, values, strict=True)}, seed, run_dir,
                                ckpt_name, args, tb_dir, epochs if isinstance(epochs, int) else None))
    return Sweep(recipe, path, list(overrides), axes, list(seeds), directory, runs, val_is_test)
