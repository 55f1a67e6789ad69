"""The runner's log: the console on rank 0, optionally a --run-log file, and durations as h:mm:ss."""
from __future__ import annotations

import datetime
import logging
import sys
from pathlib import Path

from ..errors import UsageError
from .distributed import DistContext

__all__ = ['format_eta', 'log_to_file', 'logger', 'setup_logging']

logger = logging.getLogger('ttm_torchdistill.runner')
LOG_FORMAT = logging.Formatter('%(asctime)s %(message)s', '%Y-%m-%d %H:%M:%S')


def setup_logging(ctx: DistContext, debug: bool, quiet: bool) -> None:
    """INFO on rank 0 (WARNING elsewhere or when ``quiet``); torchdistill's own log only with ``debug``."""
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO if ctx.is_main and not quiet else logging.WARNING)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(LOG_FORMAT)
    torchdistill_logger = logging.getLogger('torchdistill')
    torchdistill_logger.handlers.clear()
    torchdistill_logger.setLevel(logging.INFO if debug else logging.WARNING)
    _add_handler(console, debug)


def _add_handler(handler: logging.Handler, debug: bool) -> None:
    logger.addHandler(handler)
    if debug:
        logging.getLogger('torchdistill').addHandler(handler)


def log_to_file(ctx: DistContext, run_log: str | None, resume: bool, debug: bool) -> None:
    """Also write the log to ``--run-log`` (rank 0; appended to when resuming)."""
    if run_log and ctx.is_main:
        path = Path(run_log).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(path, mode='a' if resume else 'w')
        except OSError as exc:
            raise UsageError(f'--run-log {run_log}: cannot write there: {exc.strerror}') from None
        handler.setFormatter(LOG_FORMAT)
        _add_handler(handler, debug)


def format_eta(seconds: float) -> str:
    """A duration as h:mm:ss (negative as 0:00:00)."""
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))
