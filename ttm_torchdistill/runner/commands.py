"""`ttm-distill train` and `ttm-distill test`: set up processes and logging, build the run, train or test, report."""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ..description import RunDescription
from ..errors import TrainingDiverged, UsageError
from ..outputs import check_output_file, check_output_folder, free_name
from .distributed import DistContext, setup_distributed, teardown
from .logs import log_to_file, logger, setup_logging
from .preflight import STEP_ERRORS, describe_step_failure
from .report import report, report_training
from .run import Run, seed_everything
from .tensorboard import require as require_tensorboard
from .trainer import Trainer

__all__ = ['beside', 'check_outputs', 'run_test', 'run_train', 'with_context']


def with_context(opts: RunDescription, body, log_file: bool = True) -> dict:
    """Set up processes and logging, run ``body(ctx)``; ``log_file=False``: the body opens --run-log itself.
    The caller has checked the output paths (see :func:`check_outputs`)."""
    ctx = setup_distributed(opts.device)
    try:
        setup_logging(ctx, debug=opts.debug, quiet=opts.quiet)
        if log_file:
            log_to_file(ctx, opts.run_log, opts.resume, opts.debug)
        return body(ctx)
    finally:
        teardown()


def check_outputs(opts: RunDescription) -> None:
    """Before any work: --run-log and --summary can be written and, unless resuming, hold no earlier run's file;
    a --tensorboard folder can be written and, unless resuming, holds no earlier run's curves."""
    for path, flag in ((opts.run_log, '--run-log'), (opts.summary, '--summary')):
        if path:
            check_output_file(Path(path), flag, replace=opts.resume)
    if opts.tensorboard:
        folder = Path(opts.tensorboard).expanduser()
        check_output_folder(folder / 'events', '--tensorboard')
        if folder.exists() and not folder.is_dir():
            raise UsageError(f'--tensorboard={opts.tensorboard!r}: is a file, not a folder')
        if not opts.resume and folder.is_dir() and any(folder.glob('events.out.tfevents*')):
            raise UsageError(f'--tensorboard={opts.tensorboard!r}: holds the curves of an earlier run; give a new '
                             'folder (or --resume that run)')


def beside(path: str | None, tag: str) -> str | None:
    """``path`` when it is free, else a free ``NAME.TAG.EXT`` (``NAME.TAG.2.EXT``, ...) beside it."""
    if not path or not Path(path).expanduser().exists():
        return path
    given = Path(path).expanduser()
    return str(free_name(given.with_name(f'{given.stem}.{tag}{given.suffix}')))


def _check_passed(run: Run, what: str) -> dict:
    logger.info('check passed: %s builds (%s); nothing was trained or written', run.name, what)
    return {'recipe': run.name, 'check': 'passed'}


@torch.no_grad()
def _check_one_batch(trainer: Trainer) -> None:
    """The loss on one training batch (no update): the models' and the loss's inputs and outputs fit."""
    box, run = trainer.box, trainer.run
    images, targets, supp_dict = next(iter(run.batches(box.train_data_loader, 'train')))
    criterion = (run.config['train'].get('criterion') or {}).get('key')
    try:
        with run.autocast():
            loss = box.forward_process(images.to(trainer.ctx.device, memory_format=run.memory_format),
                                       targets.to(trainer.ctx.device), supp_dict)
    except STEP_ERRORS as exc:
        raise UsageError(describe_step_failure(run, box, exc, 'the loss on one training batch')) from None
    if not torch.isfinite(loss).all():  # the values diverge (exit 1), the recipe builds
        raise TrainingDiverged(f'{run.recipe_path}: train.criterion ({criterion}): the loss on one training batch is '
                               f'{loss.item()}')


def run_train(opts: RunDescription) -> dict:
    """Train with validation every epoch, keep the best checkpoint, then test teacher and student.

    ``opts.check``: build everything, compute the loss on one batch, then stop; nothing is written.
    """
    if opts.check:
        opts = opts.replace(run_log=None, summary=None, tensorboard=None)
    if opts.tensorboard:
        require_tensorboard('--tensorboard')  # before the lock or anything else is made
    check_outputs(opts)

    def body(ctx: DistContext) -> dict:
        run = Run(opts, ctx, train=True)
        try:
            return train(run)
        finally:
            run.release()

    def train(run: Run) -> dict:
        start, ctx = time.perf_counter(), run.ctx
        trainer = Trainer(run)
        if opts.resume:
            trainer.resume()
        if opts.check:
            _check_one_batch(trainer)
            return _check_passed(run, f'{len(trainer.box.train_data_loader)} training batches per epoch')
        trainer.open_log()
        if not opts.resume and opts.seed is not None:
            seed_everything(opts.seed + ctx.rank)  # per-rank augmentation streams after identical model init
        logger.info('training %s on %d process(es), device %s, %d epochs', run.name, ctx.world_size,
                    ctx.device.type, trainer.box.num_epochs)
        trainer.fit()
        trainer.box.clean_modules()
        return report_training(run, trainer, time.perf_counter() - start)

    return with_context(opts, body, log_file=False)


def run_test(opts: RunDescription) -> dict:
    """Evaluate the teacher and the best student checkpoint on the recipe's test loader.

    Its log and summary never replace a file (e.g. the training run's, given the same options): an existing
    ``--run-log``/``--summary`` path is written beside, as ``NAME.test.EXT``.
    """
    def body(ctx: DistContext) -> dict:
        start = time.perf_counter()
        for given, used, flag in ((given_log, opts.run_log, '--run-log'), (given_summary, opts.summary, '--summary')):
            if given != used:
                logger.info('%s %s exists: this test writes %s', flag, given, used)
        run = Run(opts, ctx)
        if opts.check:
            run.load_best()
            run.test_loader()
            return _check_passed(run, f'best checkpoint {run.best_ckpt}')
        results, best_value = run.test()
        return report(run, results, time.perf_counter() - start, dict(best_val_top1=best_value), kind='test')

    if opts.check:
        opts = opts.replace(run_log=None, summary=None)
    given_log, given_summary = opts.run_log, opts.summary
    opts = opts.replace(resume=False, run_log=beside(opts.run_log, 'test'),
                               summary=beside(opts.summary, 'test'))
    check_outputs(opts)
    return with_context(opts, body)

