"""Output files: paths checked before any work starts, atomic writes with the user's umask, strict JSON, no clobbering.

Nothing a user made is lost: a file is written to a temporary name in its folder, synced, then renamed
over the target, so a kill or a full disk leaves the previous file or the new one, never a torn one;
a write that fails (full disk, read-only file system) is one line naming the path.
"""
from __future__ import annotations

import fcntl
import io
import json
import math
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from .errors import OutputError, UsageError

__all__ = ['LockFile', 'LockHeld', 'atomic_write', 'check_output_file', 'check_output_folder', 'dumps_json',
           'file_mode', 'free_name', 'make_folders', 'record_error', 'remove_empty_folders', 'write_json',
           'write_text']


def check_output_folder(path: Path, what: str) -> None:
    """``path``'s folder exists or can be created, and files can be written there."""
    folder = path.expanduser().absolute().parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f'{what}={str(path)!r}: {existing} is a file, not a folder, so {folder} cannot be created')
    if not os.access(existing, os.W_OK | os.X_OK) or _read_only(existing):
        raise UsageError(f'{what}={str(path)!r}: no permission to write in {existing}')


def _read_only(folder: Path) -> bool:
    """Whether ``folder`` is on a read-only file system (root's os.access says writable there too)."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_output_file(path: Path, what: str, replace: bool = False) -> None:
    """:func:`check_output_folder`, and ``path`` is not a folder; unless ``replace``, it must not exist yet."""
    check_output_folder(path, what)
    path = path.expanduser()
    if path.is_dir():
        raise UsageError(f'{what}={str(path)!r}: is a folder; give a file name')
    if not replace and path.exists():
        raise UsageError(f'{what}={str(path)!r}: the file exists (from an earlier run); nothing is replaced: '
                         'give another path or move the file away')


def make_folders(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns the folders created, outermost first."""
    folder = folder.expanduser().absolute()
    missing = [f for f in (folder, *folder.parents) if not f.exists()][::-1]
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def remove_empty_folders(created: list[Path]) -> None:
    """Remove the folders of :func:`make_folders` that are still empty, innermost first (a refused run leaves no
    empty folder behind); folders with anything in them stay."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            return  # not empty (or gone): its parents are not empty either


class LockHeld(Exception):
    """Another process holds the lock file: its PID and host as it wrote them ('?' where unknown)."""

    def __init__(self, path: Path, pid: str, host: str) -> None:
        super().__init__(f'{path} is held by PID {pid} on {host}')
        self.path, self.pid, self.host = path, pid, host


class LockFile:
    """An exclusive ``flock`` on ``path``, which records the holder's PID and host.

    The kernel frees the lock when the process ends, however it ends. ``release`` removes the file while it is still
    locked, and the folders ``created`` for it that stay empty; whoever opened the file before it was removed finds,
    once it holds the lock, that the path no longer names its file and opens the path again, so removing it never
    lets two holders in. A killed holder leaves the file: the next one takes it over.
    """

    def __init__(self, path: Path, created: list[Path] = ()) -> None:
        self.path, self.created = path, list(created)
        while True:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(self.fd, 256, 0).decode(errors='replace').split()
                os.close(self.fd)
                raise LockHeld(path, *(holder + ['?', '?'])[:2]) from None
            if self._at_path():
                break
            os.close(self.fd)  # its holder removed this file as it ended: lock the one at the path now
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f'{os.getpid()} {socket.gethostname()}\n'.encode(), 0)

    def _at_path(self) -> bool:
        try:
            at_path = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(self.fd)
        return (held.st_dev, held.st_ino) == (at_path.st_dev, at_path.st_ino)

    def release(self) -> None:
        if self.fd >= 0:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = -1
            remove_empty_folders(self.created)


def free_name(path: Path) -> Path:
    """``path`` when it does not exist, else the first free ``NAME.2.EXT``, ``NAME.3.EXT``, ... beside it."""
    if not path.exists():
        return path
    n = 2
    while (candidate := path.with_name(f'{path.stem}.{n}{path.suffix}')).exists():
        n += 1
    return candidate


def file_mode() -> int:
    """The mode a new file gets from the process's umask (0o644 under the usual 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """``write`` into memory, then to a temporary file in ``path``'s folder, fsync, and rename over ``path``.

    The file gets the umask's mode (like any file the user writes). A failing write (ENOSPC, EROFS, ...) is an
    OutputError naming ``path``; the temporary file is removed and an existing ``path`` stays as it was.
    """
    path = Path(path)
    buffer = io.BytesIO()
    write(buffer)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + '.', suffix='.tmp', dir=path.parent)
        with os.fdopen(fd, 'wb') as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
        tmp = None
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise OutputError(f'cannot write {path}: {exc.strerror or exc}') from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _finite(obj: object) -> object:
    """``obj`` with every NaN or infinity replaced by None (JSON has no such numbers)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def dumps_json(obj: object, indent: int | None = 2) -> str:
    """Strict JSON: NaN and infinities become null."""
    return json.dumps(_finite(obj), indent=indent, allow_nan=False)


def write_text(path: str | os.PathLike, text: str) -> None:
    """:func:`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda f: f.write(text.encode()))


def write_json(path: str | os.PathLike, obj: object) -> None:
    """:func:`atomic_write` of strict JSON (see :func:`dumps_json`) with a final newline."""
    write_text(path, dumps_json(obj) + '\n')


def record_error(path: str | os.PathLike | None, exc: Exception) -> None:
    """Write a failed run's error line, ``exit code N: ttm-distill: error: ...``, to ``path`` (a sweep run's
    ``error.txt``, which its launcher reads); a record that cannot be written is left out (the launcher then names the
    exit code), the error itself stands."""
    if path:
        try:
            write_text(Path(path).expanduser(), f'exit code {exc.exit_code}: ttm-distill: error: {exc}\n')
        except OutputError:
            pass
