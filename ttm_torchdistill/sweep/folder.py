"""A sweep's folder: its manifest written from the plan, another sweep (or foreign files) refused, and its lock
(``DIR/.sweep.lock``: one launcher at a time). The manifest's format is ``ttm_torchdistill.formats.manifest``'s."""
from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator
from pathlib import Path

from ..errors import UsageError
from ..formats.manifest import NAME, read_manifest, write_manifest
from ..outputs import LockFile, LockHeld, check_output_folder, make_folders
from .plan import Sweep

__all__ = ['LOCK', 'check_directory', 'save_manifest', 'sweep_lock']

LOCK = '.sweep.lock'


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
        raise UsageError(f'-o {directory}: the folder holds files but no {NAME}; give a new or empty DIR')
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


def save_manifest(sweep: Sweep) -> None:
    """sweep.json with every run's description, command, current state and lockstep group, and the SLURM record."""
    runs = []
    for run in sweep.runs:
        state, best, error = run.state()
        runs.append({'point': run.point, 'values': run.values, 'seed': run.seed,
                     'dir': run.directory.relative_to(sweep.directory).as_posix(), 'ckpt': run.ckpt_name,
                     'run': run.description.to_json(), 'command': shlex.join(['ttm-distill', *run.description.argv()]),
                     'state': state, 'best_val_top1': best, 'error': error, 'group': run.group})
    data = {'identity': sweep.identity(), 'recipe': sweep.recipe, 'recipe_path': str(sweep.recipe_path),
            'overrides': sweep.overrides,
            'grid': [{'name': a.name, 'key': a.key, 'label': a.label, 'values': a.values} for a in sweep.axes],
            'seeds': sweep.seeds, 'runs': runs}
    if sweep.slurm is not None:
        data['slurm'] = sweep.slurm
    write_manifest(sweep.directory, data)
