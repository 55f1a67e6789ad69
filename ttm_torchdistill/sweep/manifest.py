"""A sweep folder's manifest (``DIR/sweep.json``: recipe, overrides, grid, seeds, each run's command and state)
and its lock (``DIR/.sweep.lock``: one launcher at a time)."""
from __future__ import annotations

import contextlib
import json
import shlex
from collections.abc import Iterator
from pathlib import Path

from ..errors import UsageError, one_line
from ..outputs import LockFile, LockHeld, check_output_folder, make_folders, write_json
from .plan import MANIFEST, Sweep

__all__ = ['LOCK', 'check_directory', 'read_manifest', 'sweep_lock', 'write_manifest']

LOCK = '.sweep.lock'


RUN_KEYS = {'point': str, 'values': dict, 'seed': int, 'dir': str, 'ckpt': str}
TOP_KEYS = {'identity': dict, 'recipe': str, 'overrides': list, 'grid': list, 'seeds': list, 'runs': list}


def _foreign(data: object) -> str | None:
    """What makes ``data`` not a manifest this package wrote, or None."""
    if not isinstance(data, dict):
        return 'not a JSON object'
    for key, kind in TOP_KEYS.items():
        if not isinstance(data.get(key), kind):
            return f'no {key!r} {kind.__name__}'
    if not all(isinstance(a, dict) and isinstance(a.get('label'), str) and isinstance(a.get('key'), str)
               and isinstance(a.get('values'), list) for a in data['grid']):
        return "a 'grid' entry without label, key and values"
    for run in data['runs']:
        if not isinstance(run, dict) or any(not isinstance(run.get(k), t) for k, t in RUN_KEYS.items()):
            return f"a 'runs' entry without {', '.join(RUN_KEYS)}"
    return None


def read_manifest(directory: Path) -> dict:
    """DIR's sweep.json, checked to be one this package wrote (else one UsageError line naming it)."""
    path = directory / MANIFEST
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f'{directory}: not a sweep folder (no {MANIFEST})') from None
    except (OSError, ValueError) as exc:
        raise UsageError(f'{path}: unreadable ({one_line(exc)})') from None
    problem = _foreign(data)
    if problem:
        raise UsageError(f'{path}: not a sweep.json written by `ttm-distill sweep` ({problem})')
    return data


def _core(identity: dict) -> dict:
    """An identity without grid values and seeds (older manifests recorded them): those may grow."""
    grid = [{'name': a.get('name'), 'key': a.get('key')} for a in identity.get('grid') or [] if isinstance(a, dict)]
    return {'recipe_path': identity.get('recipe_path'), 'overrides': identity.get('overrides'), 'grid': grid}


def check_directory(sweep: Sweep) -> dict | None:
    """Refuse a DIR that holds another sweep or foreign files; returns the existing manifest, if any."""
    directory = sweep.directory
    if directory.exists() and not directory.is_dir():
        raise UsageError(f'-o {directory}: exists and is not a folder')
    check_output_folder(sweep.manifest_path, '-o')
    if sweep.manifest_path.is_file():
        old = read_manifest(directory)
        mine, theirs = _core(sweep.identity()), _core(old['identity'])
        differ = [k for k in mine if theirs.get(k) != mine[k]]
        if differ:
            what = {'recipe_path': 'recipe', 'overrides': '--set overrides', 'grid': '--grid names'}
            raise UsageError(f'-o {directory} holds another sweep (different {", ".join(what[k] for k in differ)}); '
                             'give another DIR, or the same recipe, --set and --grid names to continue or grow that '
                             'one')
        return old
    if directory.is_dir() and any(p.name != LOCK for p in directory.iterdir()):
        raise UsageError(f'-o {directory}: the folder holds files but no {MANIFEST}; give a new or empty DIR')
    return None


@contextlib.contextmanager
def sweep_lock(directory: Path) -> Iterator[None]:
    """Hold ``DIR/.sweep.lock`` (creating DIR): one launcher per sweep folder at a time. On the way out the lock file
    goes, and so does DIR if it was made here and stayed empty (a refused sweep leaves nothing)."""
    created = make_folders(directory)
    try:
        lock = LockFile(directory / LOCK, created)
    except LockHeld as held:
        raise UsageError(f'{directory}: another `ttm-distill sweep` is running on this folder (PID {held.pid} on '
                         f'{held.host})') from None
    try:
        yield
    finally:
        lock.release()


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
    write_json(sweep.manifest_path, data)
