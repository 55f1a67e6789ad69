"""One run per checkpoint path: an exclusive ``flock`` on ``<dst_ckpt>.lock`` (an ``outputs.LockFile``).

The kernel releases the lock when the process ends, however it ends, so a killed run never blocks the next one; the
file names the holder for the message another run gets. The run removes it when it ends, with the folders it created
for it that stay empty, so a refused run leaves nothing behind.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UsageError, one_line
from ..outputs import LockFile, LockHeld, make_folders, remove_empty_folders
from .distributed import DistContext, broadcast_object

__all__ = ['RunLock', 'acquire_run_lock', 'lock_path']


def lock_path(dst_ckpt: Path) -> Path:
    return dst_ckpt.with_name(dst_ckpt.name + '.lock')


class RunLock(LockFile):
    """The run's lock file; one UsageError line naming the holder when another run has it."""

    def __init__(self, path: Path, created: list[Path] = ()) -> None:
        try:
            super().__init__(path, created)
        except LockHeld as held:
            raise UsageError(f'another run holds {path} (PID {held.pid} on {held.host}): it is writing to the same '
                             'dst_ckpt; wait for it to end, or point dst_ckpt elsewhere with --set') from None


def acquire_run_lock(dst_ckpt: Path, ctx: DistContext) -> RunLock | None:
    """Rank 0 takes the lock; every rank learns the outcome, so all of them stop together when it is held."""
    lock, refusal = None, None
    if ctx.is_main:
        path, created = lock_path(dst_ckpt), []
        try:
            created = make_folders(path.parent)
            lock = RunLock(path, created)
        except UsageError as exc:
            refusal = str(exc)
        except OSError as exc:  # no permission, a file system without locks (some NFS mounts), ...
            refusal = f'cannot lock {path}: {exc.strerror or one_line(exc)}'
        if refusal:
            remove_empty_folders(created)
    refusal = broadcast_object(refusal)
    if refusal:
        raise UsageError(refusal)
    return lock
