"""One run per checkpoint path: an exclusive ``flock`` on ``<dst_ckpt>.lock``.

The kernel releases the lock when the process ends, however it ends, so a killed run never
blocks the next one. The file stays (removing it would race with a run opening it) and records
the holder's PID and host for the message another run gets.
"""
from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from ..errors import UsageError, one_line
from .distributed import DistContext, broadcast_object

__all__ = ['RunLock', 'acquire_run_lock', 'lock_path']


def lock_path(dst_ckpt: Path) -> Path:
    return dst_ckpt.with_name(dst_ckpt.name + '.lock')


class RunLock:
    """An open lock file holding an exclusive flock; ``release`` (or the process's end) frees it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self.fd, 256, 0).decode(errors='replace').split()
            os.close(self.fd)
            pid, host = (holder + ['?', '?'])[:2]
            raise UsageError(f'another run holds {path} (PID {pid} on {host}): it is writing to the same dst_ckpt; '
                             'wait for it to end, or point dst_ckpt elsewhere with --set') from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f'{os.getpid()} {socket.gethostname()}\n'.encode(), 0)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = -1


def acquire_run_lock(dst_ckpt: Path, ctx: DistContext) -> RunLock | None:
    """Rank 0 takes the lock; every rank learns the outcome, so all of them stop together when it is held."""
    lock, refusal = None, None
    if ctx.is_main:
        path = lock_path(dst_ckpt)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = RunLock(path)
        except UsageError as exc:
            refusal = str(exc)
        except OSError as exc:  # no permission, a file system without locks (some NFS mounts), ...
            refusal = f'cannot lock {path}: {exc.strerror or one_line(exc)}'
    refusal = broadcast_object(refusal)
    if refusal:
        raise UsageError(refusal)
    return lock
