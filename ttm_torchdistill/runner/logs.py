"""The runner's log: the console on rank 0, optionally a --run-log file, and durations as h:mm:ss.

Runs trained together in one process (:mod:`.lockstep`) log inside :func:`member_lines`: the console prefixes each of
their lines with the run's name, and a run's own files (``member=NAME``) take its lines and the group's, not the
other runs'.
"""
from __future__ import annotations

import contextlib
import contextvars
import datetime
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

from ..errors import UsageError
from .distributed import DistContext

__all__ = ['CONSOLE_FORMAT', 'MemberFilter', 'format_eta', 'log_to_file', 'logger', 'member_lines', 'setup_logging']

logger = logging.getLogger('ttm_torchdistill.runner')
LOG_FORMAT = logging.Formatter('%(asctime)s %(message)s', '%Y-%m-%d %H:%M:%S')
CONSOLE_FORMAT = logging.Formatter('%(asctime)s %(member_prefix)s%(message)s', '%Y-%m-%d %H:%M:%S')
_MEMBER: contextvars.ContextVar[str | None] = contextvars.ContextVar('ttm_member', default=None)


@contextlib.contextmanager
def member_lines(name: str) -> Iterator[None]:
    """The lines logged inside are run ``name``'s (of a lockstep group)."""
    token = _MEMBER.set(name)
    try:
        yield
    finally:
        _MEMBER.reset(token)


class MemberFilter(logging.Filter):
    """Marks each line with its run (``member_prefix``: ``[NAME] `` or empty); ``only``: pass the lines of that run
    and the lines of no run only."""

    def __init__(self, only: str | None = None) -> None:
        super().__init__()
        self.only = only

    def filter(self, record: logging.LogRecord) -> bool:
        member = _MEMBER.get()
        record.member_prefix = f'[{member}] ' if member else ''
        return self.only is None or member is None or member == self.only


def setup_logging(ctx: DistContext, debug: bool, quiet: bool) -> None:
    """INFO on rank 0 (WARNING elsewhere or when ``quiet``); torchdistill's own log only with ``debug``."""
    logger.handlers.clear()
    logger.propagate = False
    logger.setLevel(logging.INFO if ctx.is_main and not quiet else logging.WARNING)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(CONSOLE_FORMAT)
    console.addFilter(MemberFilter())
    torchdistill_logger = logging.getLogger('torchdistill')
    torchdistill_logger.handlers.clear()
    torchdistill_logger.setLevel(logging.INFO if debug else logging.WARNING)
    _add_handler(console, debug)


def _add_handler(handler: logging.Handler, debug: bool) -> None:
    logger.addHandler(handler)
    if debug:
        logging.getLogger('torchdistill').addHandler(handler)


def log_to_file(ctx: DistContext, run_log: str | None, resume: bool, debug: bool, member: str | None = None,
                console: bool = False) -> logging.Handler | None:
    """Also write the log to ``--run-log`` (rank 0; appended to when resuming); returns its handler. ``member``: only
    that run's lines and the group's; ``console``: as the console writes them, appended to."""
    if run_log and ctx.is_main:
        path = Path(run_log).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(path, mode='a' if resume or console else 'w')
        except OSError as exc:
            raise UsageError(f'--run-log {run_log}: cannot write there: {exc.strerror}') from None
        handler.setFormatter(CONSOLE_FORMAT if console else LOG_FORMAT)
        handler.addFilter(MemberFilter(member))
        _add_handler(handler, debug)
        return handler
    return None


def format_eta(seconds: float) -> str:
    """A duration as h:mm:ss (negative as 0:00:00)."""
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))
