"""`ttm-distill sweep`: a grid of recipe values x seeds, one `ttm-distill train` run each, locally or on SLURM.

``DIR/sweep.json`` describes the sweep (:mod:`.manifest`); the runs are planned by :mod:`.plan` and launched by
:mod:`.local` or :mod:`.slurm`; :mod:`.results` tabulates them.
"""
from __future__ import annotations

import shlex
import sys

from ..errors import UsageError
from ..runner import tensorboard
from .local import LocalLauncher
from .manifest import check_directory, sweep_lock, write_manifest
from .plan import Sweep, plan_sweep
from .slurm import SlurmLauncher, array_in_queue

__all__ = ['run_sweep']


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
    if launcher == 'slurm':
        runner = SlurmLauncher(sweep, parallel, slurm, wait)
    else:
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
