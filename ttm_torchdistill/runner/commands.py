"""`ttm-distill train` and `ttm-distill test`: set up processes and logging, then train (a group of one, :mod:`.loop`)
or test and report."""
from __future__ import annotations

import time
from pathlib import Path

from ..description import RunDescription
from ..outputs import free_name
from .claim import check_outputs
from .distributed import DistContext, setup_distributed, teardown
from .logs import log_to_file, logger, setup_logging
from .loop import Group, Member
from .preflight import check_passed
from .report import report
from .run import Run

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


def beside(path: str | None, tag: str) -> str | None:
    """``path`` when it is free, else a free ``NAME.TAG.EXT`` (``NAME.TAG.2.EXT``, ...) beside it."""
    if not path or not Path(path).expanduser().exists():
        return path
    given = Path(path).expanduser()
    return str(free_name(given.with_name(f'{given.stem}.{tag}{given.suffix}')))


def run_train(opts: RunDescription) -> dict:
    """Train with validation every epoch, keep the best checkpoint, then test teacher and student: a group of one
    (:mod:`.loop`); returns its summary.

    ``opts.check``: build everything, compute the loss on one batch, then stop; nothing is written.
    """
    if opts.check:
        opts = opts.replace(run_log=None, summary=None, tensorboard=None)

    def body(ctx: DistContext) -> dict:
        alone = Member(opts)  # its outputs are checked as it is set up
        Group([alone], ctx, lockstep=False).run()
        return alone.result

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
            run.eval_loader('test')
            return check_passed(run, f'best checkpoint {run.best_ckpt}')
        results, best_value = run.test()
        return report(run, results, time.perf_counter() - start, dict(best_val_top1=best_value), kind='test')

    if opts.check:
        opts = opts.replace(run_log=None, summary=None)
    given_log, given_summary = opts.run_log, opts.summary
    opts = opts.replace(resume=False, run_log=beside(opts.run_log, 'test'),
                               summary=beside(opts.summary, 'test'))
    check_outputs(opts)
    return with_context(opts, body)

