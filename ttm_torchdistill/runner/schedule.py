"""The learning-rate schedule of a run: checked against the training loader, and rebuilt exactly on --resume.

torchdistill steps a scheduler after the iterations where ``stage_grad_count`` is a multiple of both
``scheduling_step`` and ``grad_accum_step`` (``scheduling_step`` > 0), else once after each epoch. A schedule
counted in iterations (``warmup_cosine_lr``'s ``iterations_per_epoch``, OneCycleLR's ``steps_per_epoch``) is right
only when that is how often it is stepped, so a mismatch is refused before anything is built on it.

On --resume, a schedule that is the checkpoint's (same scheduler, same settings) continues from its saved state. One
that differs (another ``num_epochs``, or any change accepted with --allow-recipe-change) is rebuilt as a straight run
of the resumed recipe would have it after the epochs done: the fresh scheduler is stepped as torchdistill steps it,
so the learning rate is bit for bit a straight run's. ReduceLROnPlateau follows validation results, which cannot be
replayed: a changed one is refused.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts, ReduceLROnPlateau

from ..errors import UsageError
from .logs import logger

__all__ = ['check_schedule', 'restore_schedule', 'scheduler_steps_per_epoch']

PER_ITERATION = ('iterations_per_epoch', 'steps_per_epoch')
"""scheduler kwargs that count the scheduler's steps in one epoch (ours; torch's OneCycleLR)"""
PROGRESS = frozenset({'last_epoch', '_step_count', '_last_lr', '_get_lr_called_within_step', '_is_initial', 'T_cur',
                      'T_i', 'best', 'num_bad_epochs', 'cooldown_counter', 'verbose'})
"""scheduler state that records how far it has gone, not which schedule it is"""


def _step_every(box) -> int | None:
    """Iterations between two scheduler steps, or None when it is stepped once per epoch."""
    step = box.scheduling_step or 0
    return math.lcm(step, box.grad_accum_step or 1) if step > 0 else None


def scheduler_steps_per_epoch(box, iterations: int) -> int:
    """How often torchdistill steps ``box``'s scheduler in an epoch of ``iterations`` training iterations."""
    every = _step_every(box)
    return 1 if every is None else iterations // every


def check_schedule(source: Path, train_config: dict, box, iterations: int) -> None:
    """Refuse a schedule counted in iterations that the runner would step a different number of times per epoch."""
    config = train_config.get('scheduler') or {}
    kwargs = config.get('kwargs') or {}
    name = next((k for k in PER_ITERATION if k in kwargs), None)
    if box.lr_scheduler is None:
        return
    if name is None:
        _warn_epoch_milestones(config, box, iterations)
        return
    steps, declared = scheduler_steps_per_epoch(box, iterations), kwargs[name]
    if steps == declared:
        return
    how = (f'scheduling_step {box.scheduling_step} steps it once per epoch; it counts iterations: set '
           'train.scheduler.scheduling_step: 1') if _step_every(box) is None else (
        f'{iterations} training iterations per epoch in this process, stepped every {_step_every(box)} '
        f'(scheduling_step {box.scheduling_step}, grad_accum_step {box.grad_accum_step}); count them with '
        'ttm_torchdistill.data.iterations_per_epoch from the training loader\'s dataset, batch size and drop_last')
    raise UsageError(f'{source}: train.scheduler ({config.get("key")}): kwargs.{name}={declared!r} but the scheduler '
                     f'is stepped {steps} time(s) per epoch: {how}')


def _warn_epoch_milestones(config: dict, box, iterations: int) -> None:
    """A warning where milestones that look like epochs are counted in iterations (all inside the first epoch)."""
    kwargs = config.get('kwargs') or {}
    milestones = kwargs.get('milestones') or ([kwargs['step_size']] if 'step_size' in kwargs else [])
    every = _step_every(box)
    numbers = [m for m in milestones if isinstance(m, int) and not isinstance(m, bool)]
    if every is not None and numbers and max(numbers) * every < iterations:
        logger.warning('train.scheduler (%s) is stepped every %d iteration(s) (scheduling_step %s): its milestones %s '
                       'count steps and all fall in the first epoch (%d iterations); for milestones in epochs set '
                       'train.scheduler.scheduling_step: 0', config.get('key'), every, box.scheduling_step,
                       numbers, iterations)


def _signature(state: object) -> object:
    """A scheduler state without its progress: equal for two schedulers of the same schedule."""
    if isinstance(state, dict):
        return {k: _signature(v) for k, v in state.items() if k not in PROGRESS}
    if isinstance(state, (list, tuple)):
        return [_signature(v) for v in state]
    if isinstance(state, torch.Tensor):
        return state.tolist()
    return state


def _replay(box, epochs_done: int, iterations: int, extra: int = 0) -> None:
    """Step the fresh scheduler as torchdistill's default processes step it in ``epochs_done`` epochs and ``extra``
    iterations."""
    scheduler, every = box.lr_scheduler, _step_every(box)
    with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": no optimizer step is replayed
        warnings.simplefilter('ignore')
        if every is None:
            for _ in range(epochs_done):
                restart = isinstance(scheduler, CosineAnnealingWarmRestarts)
                scheduler.step(scheduler.last_epoch + 1) if restart else scheduler.step()
            return
        for count in range(every, epochs_done * iterations + extra + 1, every):
            if isinstance(scheduler, CosineAnnealingWarmRestarts):
                scheduler.step(int(count / box.scheduling_step))
            else:
                scheduler.step()


def _hyperparameters(groups: Iterable[dict]) -> list[dict]:
    return [{k: v for k, v in group.items() if k != 'params'} for group in groups]


def restore_schedule(box, saved: dict | None, optimizer_state: dict, epochs_done: int, iterations: int,
                     path: Path, extra: int = 0) -> None:
    """Load the optimizer's state and put the schedule where a straight run of this recipe has it after
    ``epochs_done`` epochs of ``iterations`` iterations and ``extra`` iterations of the next (a mid-epoch checkpoint).

    The optimizer keeps its saved buffers (momentum, Adam's moments) and takes the recipe's hyperparameters; its
    learning rate is the schedule's. ``saved``: the checkpoint's scheduler state (None: it had no scheduler).
    Raises ValueError/KeyError/TypeError where the saved optimizer state does not fit.
    """
    scheduler = box.lr_scheduler
    recipe = _hyperparameters(box.optimizer.param_groups)
    if scheduler is not None:
        same = saved is not None and _signature(scheduler.state_dict()) == _signature(saved)
        if same:
            scheduler.load_state_dict(saved)
        elif isinstance(scheduler, ReduceLROnPlateau):
            raise UsageError(f'--resume: train.scheduler (ReduceLROnPlateau) differs from the one in {path}; its '
                             'state follows validation results, which cannot be replayed: resume with the same '
                             'scheduler settings')
        else:
            _replay(box, epochs_done, iterations, extra)
            logger.warning('--resume: the learning-rate schedule differs from the one in %s (another num_epochs, '
                           'number of processes or scheduler setting): rebuilt as a straight run of this recipe has '
                           'it after epoch %d (lr %.6g)', path,
                           epochs_done, scheduler.get_last_lr()[0])
    box.optimizer.load_state_dict(optimizer_state)
    lrs = scheduler.get_last_lr() if scheduler is not None else [group['lr'] for group in recipe]
    for group, own, lr in zip(box.optimizer.param_groups, recipe, lrs, strict=True):
        group.update(own, lr=lr)
