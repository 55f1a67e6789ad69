"""`ttm-distill sweep`: a grid of recipe values x seeds, one `ttm-distill train` run each, locally or on SLURM.

``DIR/sweep.json`` describes the sweep: recipe, overrides, grid, seeds and, per run, its exact command and
state. Each run lives in ``DIR/<point>/seed<k>/``, and its state is read from that folder: ``summary.json``
(finished, when readable), ``error.txt`` (failed), a ``.last.pt`` checkpoint (interrupted: the next call resumes
it), else pending. Runs skip the test pass: points are chosen on validation only. One launcher at a time holds
``DIR/.sweep.lock``.
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import itertools
import json
import math
import os
import re
import shlex
import signal
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..losses import TTMLoss, WTTMLoss
from ..runner import tensorboard
from ..runner.checkpoint import last_ckpt_path
from ..runner.errors import UsageError, one_line
from ..runner.recipe import _child, apply_override, parse_overrides, resolve_recipe
from .table import FORMATS, _mean_std, _pm

__all__ = ['RunSpec', 'Sweep', 'plan_sweep', 'run_sweep', 'sweep_lock', 'sweep_rows', 'sweep_table']

SHORT_NAMES = ('gamma', 'beta', 'alpha', 'temperature')
LOSS_CLASSES = {'TTMLoss': TTMLoss, 'WTTMLoss': WTTMLoss, 'KDLoss': None}
SUB_TERMS = ('train', 'criterion', 'kwargs', 'sub_terms')
MANIFEST = 'sweep.json'
LOCK = '.sweep.lock'
INTERRUPTED = {130, -signal.SIGINT, -signal.SIGTERM}
"""exit codes of a run stopped from outside (Ctrl-C, preemption): resumable, not failed"""


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
            return 'failed', None, self.error_path.read_text().strip()
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
        """What makes two sweeps the same sweep (a re-run must match it)."""
        return {'recipe_path': str(self.recipe_path), 'overrides': self.overrides,
                'grid': [{'name': a.name, 'key': a.key, 'values': a.values} for a in self.axes], 'seeds': self.seeds}


def _compose(path: Path) -> yaml.Node:
    """The recipe's YAML node graph; nothing is constructed, so no tag runs."""
    try:
        root = yaml.compose(path.read_text(), Loader=yaml.FullLoader)
    except OSError as exc:
        raise UsageError(f'cannot read recipe {path}: {exc.strerror}') from None
    except yaml.YAMLError as exc:
        raise UsageError(f'{path}: malformed YAML: {one_line(exc)}') from None
    if not isinstance(root, yaml.MappingNode):
        raise UsageError(f'{path}: a recipe must be a YAML mapping with datasets, models, train and test')
    return root


def _node(root: yaml.Node, keys) -> yaml.Node | None:
    node = root
    for key in keys:
        found = _child(node, key)
        if found is None:
            return None
        container, index = found
        node = container[index][1] if isinstance(node, yaml.MappingNode) else container[index]
    return node


def _loss_terms(root: yaml.Node) -> list[tuple[str, str, yaml.Node | None]]:
    """(term name, loss key, kwargs node) of every TTMLoss / WTTMLoss / KDLoss term."""
    sub_terms = _node(root, SUB_TERMS)
    terms = []
    if isinstance(sub_terms, yaml.MappingNode):
        for name, term in sub_terms.value:
            key = _node(term, ('criterion', 'key'))
            if isinstance(key, yaml.ScalarNode) and key.value in LOSS_CLASSES:
                terms.append((name.value, key.value, _node(term, ('criterion', 'kwargs'))))
    return terms


def _resolve_key(name: str, root: yaml.Node, path: Path) -> str:
    if name not in SHORT_NAMES:
        return name
    terms = _loss_terms(root)
    if not terms:
        raise UsageError(f'--grid {name}: {path} has no TTMLoss, WTTMLoss or KDLoss term under '
                         f'{".".join(SUB_TERMS)}; give the full key instead')
    if len(terms) > 1:
        names = ', '.join(f'{t} ({k})' for t, k, _ in terms)
        raise UsageError(f'--grid {name}: {path} has several loss terms ({names}); give the full key, e.g. '
                         f'{".".join(SUB_TERMS)}.{terms[0][0]}.criterion.kwargs.{name}')
    term, loss_key, kwargs = terms[0]
    if _child(kwargs, name) is None:
        present = [k.value for k, _ in kwargs.value] if isinstance(kwargs, yaml.MappingNode) else []
        raise UsageError(f'--grid {name}: the {loss_key} term {term!r} of {path} does not set {name!r} (it sets: '
                         f'{", ".join(present) or "nothing"}); add it to the recipe or give another name')
    return '.'.join((*SUB_TERMS, term, 'criterion', 'kwargs', name))


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


def _check_losses(root: yaml.Node, point: str) -> None:
    """Build the point's TTM/WTTM loss term so a value out of range is refused before anything runs."""
    for term, loss_key, kwargs in _loss_terms(root):
        cls = LOSS_CLASSES[loss_key]
        if cls is None or not isinstance(kwargs, yaml.MappingNode):
            continue
        try:
            cls(**yaml.FullLoader('').construct_object(kwargs, deep=True))
        except (TypeError, ValueError) as exc:
            raise UsageError(f'--grid {point}: {loss_key} term {term!r}: {one_line(exc)}') from None


def _python_value(value: str) -> object:
    """A grid value as a Python scalar (for hparams)."""
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    return parsed if isinstance(parsed, (int, float, str, bool)) else value


def plan_sweep(recipe: str, grid: list[str], seeds: list[int], overrides: list[str],
               output: str | os.PathLike) -> Sweep:
    """Check everything and list the runs; touches nothing on disk."""
    axes = parse_grid(grid)
    if not seeds:
        raise UsageError('--seeds: give at least one seed')
    if len(set(seeds)) < len(seeds):
        raise UsageError(f'--seeds {" ".join(map(str, seeds))}: a seed is repeated')
    path = resolve_recipe(recipe).resolve()
    parsed = parse_overrides(list(overrides))
    root = _compose(path)
    for keys, value in parsed:
        apply_override(root, keys, value, path)
    for axis in axes:
        axis.key = _resolve_key(axis.name, root, path)
    if len({a.key for a in axes}) < len(axes):
        raise UsageError('--grid: two names resolve to the same key ' + ', '.join(a.key for a in axes))
    _labels(axes)
    models = _node(root, ('models',))
    student_key = 'student_model' if _child(models, 'student_model') is not None else 'model'
    dst = _node(root, ('models', student_key, 'dst_ckpt'))
    if not isinstance(dst, yaml.ScalarNode) or not dst.value:
        raise UsageError(f'{path}: models.{student_key}.dst_ckpt is required')
    val = _node(root, ('train', 'val_data_loader', 'dataset_id'))
    test = _node(root, ('test', 'test_data_loader', 'dataset_id'))
    val_is_test = isinstance(val, yaml.ScalarNode) and isinstance(test, yaml.ScalarNode) and val.value == test.value
    directory = Path(output).expanduser().resolve()
    tensorboard_curves = tensorboard.available()
    runs, folders = [], set()
    for values in itertools.product(*(a.values for a in axes)):
        for axis, value in zip(axes, values, strict=True):
            try:
                apply_override(root, axis.key.split('.'), yaml.compose(value, Loader=yaml.FullLoader), path)
            except UsageError as exc:
                raise UsageError(str(exc).replace('--set ', '--grid ', 1)) from None
        point = '_'.join(_folder(a.label, v) for a, v in zip(axes, values, strict=True))
        desc = ' '.join(f'{a.label}={v}' for a, v in zip(axes, values, strict=True))
        _check_losses(root, desc)
        if point in folders:
            raise UsageError(f'--grid: two points share the folder name {point!r}; use simpler values')
        folders.add(point)
        for seed in seeds:
            run_dir = directory / point / f'seed{seed}'
            args = ['train', str(path), '--set', f'models.{student_key}.dst_ckpt={run_dir / Path(dst.value).name}']
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
                                Path(dst.value).name, args, tb_dir))
    return Sweep(recipe, path, list(overrides), axes, list(seeds), directory, runs, val_is_test)


def read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f'{directory}: not a sweep folder (no {MANIFEST})') from None
    except (OSError, ValueError) as exc:
        raise UsageError(f'{path}: unreadable ({one_line(exc)})') from None


def check_directory(sweep: Sweep) -> dict | None:
    """Refuse a DIR that holds another sweep or foreign files; returns the existing manifest, if any."""
    directory = sweep.directory
    if directory.exists() and not directory.is_dir():
        raise UsageError(f'-o {directory}: exists and is not a folder')
    if sweep.manifest_path.is_file():
        old = read_manifest(directory)
        mine = sweep.identity()
        differ = [k for k in mine if old.get('identity', {}).get(k) != mine[k]]
        if differ:
            raise UsageError(f'-o {directory} holds another sweep (different {", ".join(differ)}); '
                             'give another DIR, or the same command to continue that one')
        return old
    if directory.is_dir() and any(p.name != LOCK for p in directory.iterdir()):
        raise UsageError(f'-o {directory}: the folder holds files but no {MANIFEST}; give a new or empty DIR')
    return None


@contextlib.contextmanager
def sweep_lock(directory: Path) -> Iterator[None]:
    """Hold ``DIR/.sweep.lock``: one launcher per sweep folder at a time (the folder must exist)."""
    with (directory / LOCK).open('w') as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(f'{directory}: another `ttm-distill sweep` is running on this folder') from None
        yield


def write_manifest(sweep: Sweep) -> None:
    """sweep.json with every run's command and current state, and the SLURM record (written atomically)."""
    runs = []
    for run in sweep.runs:
        state, best, error = run.state()
        runs.append({'point': run.point, 'values': run.values, 'seed': run.seed,
                     'dir': run.directory.relative_to(sweep.directory).as_posix(), 'ckpt': run.ckpt_name,
                     'command': shlex.join(['ttm-distill', *run.args]), 'state': state, 'best_val_top1': best,
                     'error': error})
    data = {'identity': sweep.identity(), 'recipe': sweep.recipe, 'recipe_path': str(sweep.recipe_path),
            'overrides': sweep.overrides,
            'grid': [{'name': a.name, 'key': a.key, 'label': a.label, 'values': a.values} for a in sweep.axes],
            'seeds': sweep.seeds, 'runs': runs}
    if sweep.slurm is not None:
        data['slurm'] = sweep.slurm
    tmp = sweep.manifest_path.with_name(MANIFEST + '.tmp')
    tmp.write_text(json.dumps(data, indent=2) + '\n')
    os.replace(tmp, sweep.manifest_path)


def _error_line(output: Path, returncode: int) -> str:
    try:
        lines = [line.strip() for line in output.read_text(errors='replace').splitlines() if line.strip()]
    except OSError:
        lines = []
    errors = [line for line in lines if line.startswith('ttm-distill: error:')]
    what = f'killed by signal {-returncode}' if returncode < 0 else f'exit code {returncode}'
    detail = errors[-1] if errors else (lines[-1] if lines else 'no output')
    return f'{what}: {detail}'


def record_exit(run: RunSpec, returncode: int) -> tuple[str, float | None, str | None]:
    """The run's :meth:`RunSpec.state` after its process ended; a failure leaves its error line in error.txt."""
    if returncode == 0 and run.summary_path.is_file():
        state = run.state()
        if run.tensorboard_dir is not None and state[1] is not None:
            hparams = {k: _python_value(v) for k, v in run.values.items()}
            tensorboard.write_hparams(run.tensorboard_dir, dict(hparams, seed=run.seed), {'best_val_top1': state[1]})
        return state
    if returncode in INTERRUPTED:
        return run.state()
    error = _error_line(run.output_path, returncode)
    run.error_path.write_text(error + '\n')
    return 'failed', None, error


def start_run(run: RunSpec) -> list[str]:
    """Clear an earlier failure and return the full command line of the run (this interpreter)."""
    run.directory.mkdir(parents=True, exist_ok=True)
    run.error_path.unlink(missing_ok=True)
    return [sys.executable, '-m', 'ttm_torchdistill', *run.command()]


def _best_command(manifest: dict, values: dict) -> str:
    args = ['ttm-distill', 'train', manifest['recipe']]
    for o in manifest['overrides']:
        args += ['--set', o]
    for axis in manifest['grid']:
        args += ['--set', f'{axis["key"]}={values[axis["label"]]}']
    return shlex.join(args)


def sweep_rows(directory: Path, manifest: dict | None = None) -> list[dict]:
    """One row per grid point: values, finished/failed counts, mean and std of best val top-1; best first.
    ``manifest``: DIR's sweep.json, read when not given."""
    manifest = read_manifest(directory) if manifest is None else manifest
    rows: dict[str, dict] = {}
    for entry in manifest['runs']:
        run = RunSpec(entry['point'], entry['values'], entry['seed'], directory / entry['dir'], entry['ckpt'], [])
        row = rows.setdefault(run.point, {'point': run.point, 'values': run.values, 'seeds': 0, 'finished': 0,
                                          'failed': 0, 'val_top1': [], 'errors': []})
        state, best, error = run.state()
        row['seeds'] += 1
        if state == 'finished':
            row['finished'] += 1
            row['val_top1'].append(best)
        elif state == 'failed':
            row['failed'] += 1
            row['errors'].append(f'{run.name}: {error}')
    for row in rows.values():
        row['val_top1_mean'], row['val_top1_std'] = _mean_std(row['val_top1'])
        row['command'] = _best_command(manifest, row['values'])
    ordered = sorted(rows.values(), key=lambda r: -r['val_top1_mean'] if r['val_top1_mean'] is not None else math.inf)
    for i, row in enumerate(ordered):
        row['best'] = i == 0 and row['val_top1_mean'] is not None
    return ordered


def sweep_table(directory: Path, fmt: str = 'markdown') -> str:
    """The sweep's table: one row per grid point, best mean validation top-1 over seeds first."""
    if fmt not in FORMATS:
        raise UsageError(f'--format {fmt!r}: accepted values are {", ".join(FORMATS)}')
    directory = Path(directory)
    manifest = read_manifest(directory)
    rows = sweep_rows(directory, manifest)
    labels = [axis['label'] for axis in manifest['grid']]
    best = next((r for r in rows if r['best']), None)
    if fmt == 'json':
        return json.dumps({'recipe': manifest['recipe'], 'grid': manifest['grid'], 'seeds': manifest['seeds'],
                           'rows': rows, 'best': best}, indent=2)
    if fmt == 'csv':
        out = io.StringIO()
        writer = csv.writer(out, lineterminator='\n')
        writer.writerow(['best', *labels, 'seeds', 'finished', 'failed', 'val_top1_mean', 'val_top1_std', 'errors',
                         'command'])
        for r in rows:
            writer.writerow([int(r['best']), *(r['values'][k] for k in labels), r['seeds'], r['finished'], r['failed'],
                             r['val_top1_mean'], r['val_top1_std'], ' | '.join(r['errors']), r['command']])
        return out.getvalue().rstrip('\n')
    lines = [f'sweep {directory} ({manifest["recipe"]}, seeds {" ".join(map(str, manifest["seeds"]))})', '',
             '| best | ' + ' | '.join(labels) + ' | finished | failed | val top-1 (mean +- std) |',
             '|---|' + '---|' * len(labels) + '---|---|---|']
    for r in rows:
        cells = ['*' if r['best'] else '', *(r['values'][k] for k in labels), f'{r["finished"]}/{r["seeds"]}',
                 str(r['failed']), _pm(r['val_top1_mean'], r['val_top1_std'])]
        lines.append('| ' + ' | '.join(cells) + ' |')
    for r in rows:
        lines += [f'failed {error}' for error in r['errors']]
    if best is not None:
        point = ' '.join(f'{k}={best["values"][k]}' for k in labels)
        score = _pm(best['val_top1_mean'], best['val_top1_std'])
        lines += ['', f'best: {point} (validation top-1 {score} over {best["finished"]} seed(s)); '
                      'train it with the test pass:', f'    {best["command"]}']
    return '\n'.join(lines)


def _warn(sweep: Sweep) -> None:
    if sweep.val_is_test:
        print(f'warning: {sweep.recipe} validates on its test set, so choosing a point on validation sees the test '
              'set; validate on a held-out part of the training set instead (README, "Tuning a new pair")',
              file=sys.stderr, flush=True)
    if not tensorboard.available():
        print(f'note: no TensorBoard curves: the tensorboard package is not installed ({tensorboard.INSTALL})',
              flush=True)


def _print_runs(sweep: Sweep) -> None:
    for run in sweep.runs:
        state = run.state()[0]
        print(f'{run.name:<40} {state:<11} ttm-distill {shlex.join(run.command())}')


def run_sweep(recipe: str, grid: list[str], seeds: list[int], overrides: list[str], output: str,
              launcher: str = 'local', parallel: int | None = None, slurm: list[str] = (), dry_run: bool = False,
              wait: bool = False) -> int:
    """`ttm-distill sweep`: check, then run (local) or submit (slurm) every run that has not finished."""
    if parallel is not None and parallel < 1:
        raise UsageError(f'--parallel {parallel}: must be at least 1')
    if launcher != 'slurm' and (slurm or wait):
        raise UsageError('--slurm and --wait need --launcher slurm')
    sweep = plan_sweep(recipe, grid, seeds, overrides, output)
    check_directory(sweep)  # a folder that is refused stays untouched: no lock file in it
    from .sweep_slurm import SlurmLauncher, array_in_queue
    if launcher == 'slurm':
        runner = SlurmLauncher(sweep, parallel, slurm, wait)
    else:
        from .sweep_local import LocalLauncher
        runner = LocalLauncher(sweep, parallel)
    if dry_run:
        _warn(sweep)
        _print_runs(sweep)
        runner.describe()
        return 0
    sweep.directory.mkdir(parents=True, exist_ok=True)
    with sweep_lock(sweep.directory):
        old = check_directory(sweep)  # again: another launcher may have written DIR before this one got the lock
        sweep.slurm = (old or {}).get('slurm')
        array = (sweep.slurm or {}).get('job_id')
        if array and array_in_queue(array):
            raise UsageError(f'{sweep.directory}: its SLURM array {array} is still queued or running '
                             f'(squeue -j {array}); wait for it or scancel it first')
        _warn(sweep)
        write_manifest(sweep)
        return runner.launch()
