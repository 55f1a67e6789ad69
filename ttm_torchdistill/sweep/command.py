"""`ttm-distill sweep`: recipes (one, or several of one pair) x a grid of recipe values x seeds, one `ttm-distill
train` run each, locally or on SLURM.

The runs are planned by :mod:`.plan` as run descriptions and launched by :mod:`.local` or :mod:`.slurm`;
``DIR/sweep.json`` records them (:mod:`.folder`); :mod:`.results` tabulates them.
"""
from __future__ import annotations

import shlex
import sys
import tempfile

from ..description import Override
from ..errors import TrainingDiverged, UsageError
from ..recipe import RecipeDocument, parse_overrides
from ..runner import tensorboard
from ..runner.commands import run_train
from .folder import check_directory, save_manifest, sweep_lock
from .jobs import check_lockstep, lockstep_note
from .local import LocalLauncher
from .plan import Sweep, plan_sweep
from .slurm import SlurmLauncher
from .slurm_request import JobRequest, job_in_queue

__all__ = ['run_sweep']


def _warn(sweep: Sweep) -> None:
    for run in sweep.runs:
        skipped = run.summary_note()
        if skipped is not None:
            print(f'note: {skipped}: the run goes on, that file set aside in its attempts/', flush=True)
    on_test = [r.given for r in sweep.recipes if r.view.val_is_test]
    if on_test:
        which = (f'{on_test[0]} validates on its test set' if len(on_test) == 1 else
                 f'{", ".join(on_test)} validate on their test set')
        print(f'warning: {which}, so choosing a point on validation sees the test set; validate on a held-out part of '
              'the training set instead (docs/tuning.md, "Validate on held-out training images")', file=sys.stderr,
              flush=True)
    if not tensorboard.available():
        print(f'note: no TensorBoard curves: the tensorboard package is not installed ({tensorboard.INSTALL})',
              flush=True)


def _print_runs(sweep: Sweep) -> None:
    for run in sweep.runs:
        state = run.state()[0]
        print(f'{run.name:<40} {state:<11} ttm-distill {shlex.join(run.argv())}')


def _check_recipes(sweep: Sweep, dry_run: bool) -> None:
    """A recipe-wide error (a missing plugin module, a wrong data root, missing teacher weights) is one line before
    any run starts, not one failure per run. Before launching: `train --check` of each recipe's first run, in this
    process on the CPU, writing nothing (datasets, models, teacher weights, the loss on one batch). For --dry-run,
    quicker: each recipe is built as a document (plugins imported, values validated, datasets built), no models."""
    for recipe in sweep.recipes:
        first = next(run.description for run in sweep.runs if run.recipe == (recipe.label or None))
        with tempfile.TemporaryDirectory(prefix='ttm-sweep-check-') as scratch:  # where a new run would write
            overrides = tuple(Override(o.key, f'{scratch}/check.pt') if o.key == recipe.dst_key else o
                              for o in first.overrides)
            if dry_run:
                RecipeDocument.open(recipe.path, parse_overrides(overrides)).build()
                continue
            try:
                run_train(first.replace(overrides=overrides, device='cpu', check=True, quiet=True, seed=None,
                                        run_log=None, summary=None, tensorboard=None))
            except TrainingDiverged:
                pass  # a non-finite loss belongs to this point's values, not the recipe: its run records it


def run_sweep(recipes: list[str], grid: list[str], seeds: list[int], overrides: list[str], output: str,
              launcher: str = 'local', parallel: int | None = None, slurm: list[str] = (), dry_run: bool = False,
              wait: bool = False, runs_per_gpu: int | None = None, lockstep: bool = False,
              group_size: int | None = None, nodes: int | None = None, gpus_per_node: int | None = None,
              tasks_per_node: int | None = None) -> int:
    """`ttm-distill sweep`: check, then run (local) or submit (slurm) every run that has not finished. ``recipes``:
    one (with a ``grid``), or several of one teacher-student pair (:func:`.plan.plan_sweep`).

    ``runs_per_gpu`` (local): that many runs (lockstep groups) at once on each visible GPU, each pinned with
    CUDA_VISIBLE_DEVICES. ``lockstep``: the runs of a seed train together in one process, ``group_size`` at most
    (default all), sharing the training loader and the teacher's forward (:mod:`.jobs`); recipes that differ in more
    than their loss train in groups of their own (a note says so)."""
    if parallel is not None and parallel < 1:
        raise UsageError(f'--parallel {parallel}: must be at least 1')
    if group_size is not None and not lockstep:
        raise UsageError('--group-size needs --lockstep')
    if group_size is not None and group_size < 1:
        raise UsageError(f'--group-size {group_size}: must be at least 1')
    if runs_per_gpu is not None and runs_per_gpu < 1:
        raise UsageError(f'--runs-per-gpu {runs_per_gpu}: must be at least 1')
    if launcher == 'slurm' and runs_per_gpu is not None:
        raise UsageError('--runs-per-gpu needs --launcher local (a SLURM array gives each run its own task)')
    shape = {'--nodes': nodes, '--gpus-per-node': gpus_per_node, '--tasks-per-node': tasks_per_node}
    if launcher != 'slurm' and (slurm or wait or any(v is not None for v in shape.values())):
        given = [flag for flag, v in shape.items() if v is not None] + ['--slurm'] * bool(slurm) + ['--wait'] * wait
        raise UsageError(f'{", ".join(given)} need --launcher slurm')
    request = JobRequest(nodes if nodes is not None else 1, gpus_per_node, tasks_per_node, tuple(slurm), wait)
    if lockstep and request.world_size > 1:
        raise UsageError(f'--lockstep with jobs of {request.world_size} ranks (--nodes, --gpus-per-node, '
                         '--tasks-per-node): a lockstep group trains in one process; give each group one task')
    # DIR's manifest is read as the plan is made: a folder that is refused stays untouched, no lock file in it
    sweep = plan_sweep(recipes, grid, seeds, overrides, output, earlier=check_directory)
    old = sweep.earlier
    if lockstep:
        check_lockstep(sweep)
        note = lockstep_note(sweep)
        if note:
            print(note, flush=True)
    if old is not None and len(sweep.runs) > len(old.runs):
        print(f'{sweep.directory}: the sweep grows from {len(old.runs)} to {len(sweep.runs)} runs', flush=True)
    _check_recipes(sweep, dry_run)
    def make_launcher(sweep: Sweep) -> LocalLauncher | SlurmLauncher:
        if launcher == 'slurm':
            return SlurmLauncher(sweep, parallel, request, lockstep, group_size)
        return LocalLauncher(sweep, parallel, runs_per_gpu, lockstep, group_size)

    runner = make_launcher(sweep)
    if dry_run:
        _warn(sweep)
        _print_runs(sweep)
        runner.describe()
        return 0
    with sweep_lock(sweep.directory):
        now = check_directory(sweep)
        if (now.to_json() if now else None) != (old.to_json() if old else None):  # another launcher wrote DIR
            sweep = plan_sweep(recipes, grid, seeds, overrides, output, earlier=check_directory)
            old = sweep.earlier
            runner = make_launcher(sweep)
        sweep.slurm = old.slurm if old is not None else None
        array = old.slurm_array if old is not None else None
        if array and job_in_queue(array):
            raise UsageError(f'{sweep.directory}: its SLURM array {array} is still queued or running '
                             f'(squeue -j {array}); wait for it or scancel it first')
        _warn(sweep)
        save_manifest(sweep)
        return runner.launch()
