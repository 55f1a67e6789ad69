"""A sweep's folder: its manifest written from the plan, another sweep (or foreign files) refused, and its lock
(``DIR/.sweep.lock``: one launcher at a time). The manifest's format is ``ttm_torchdistill.formats.manifest``'s."""
from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator
from pathlib import Path

from ..errors import UsageError
from ..formats.manifest import NAME, GridAxis, RecipeRecord, RunEntry, SweepManifest, read_manifest, write_manifest
from ..outputs import LockFile, LockHeld, check_output_folder, make_folders
from .plan import Sweep

__all__ = ['LOCK', 'check_directory', 'save_manifest', 'sweep_lock']

LOCK = '.sweep.lock'


def check_directory(sweep: Sweep) -> SweepManifest | None:
    """Refuse a DIR that holds another sweep or foreign files; returns the existing manifest, if any."""
    directory = sweep.directory
    if directory.exists() and not directory.is_dir():
        raise UsageError(f'-o {directory}: exists and is not a folder')
    check_output_folder(sweep.manifest_path, '-o')
    if sweep.manifest_path.is_file():
        old = read_manifest(directory)
        differ = sweep.identity().differences(old.identity)
        if differ:
            raise UsageError(f'-o {directory} holds another sweep (different {", ".join(differ)}); '
                             'give another DIR, or the same recipe(s), --set and --grid names to continue or grow that '
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
    """sweep.json with the recipes, every run's description, command, current state and lockstep group, and the SLURM
    record."""
    runs = []
    for run in sweep.runs:
        state, best, error = run.state()
        folder = run.directory.relative_to(sweep.directory).as_posix()
        runs.append(RunEntry(
            point=run.point, values=run.values, seed=run.seed, dir=folder, ckpt=run.ckpt_name,
            run=run.description.to_json(), command=shlex.join(['ttm-distill', *run.description.argv()]), state=state,
            best_val_top1=best, error=error, group=run.group, recipe=run.recipe))
    first = sweep.recipes[0]
    grid = tuple(GridAxis(a.name, key, a.label, tuple(a.values)) for a, key in zip(sweep.axes, first.keys, strict=True))
    recipes = tuple(RecipeRecord(r.label, r.given, str(r.path), tuple(r.keys), r.paper_top1) for r in sweep.recipes)
    write_manifest(sweep.directory, SweepManifest(
        identity=sweep.identity(), recipe=first.given, recipe_path=str(first.path), overrides=tuple(sweep.overrides),
        grid=grid, seeds=tuple(sweep.seeds), runs=tuple(runs), recipes=recipes, slurm=sweep.slurm))
