"""Output paths: checked before any work starts, so a run never fails after its work is done."""
from __future__ import annotations

import os
from pathlib import Path

from .errors import UsageError

__all__ = ['check_output_folder']


def check_output_folder(path: Path, what: str) -> None:
    """``path``'s folder exists or can be created, and files can be written there."""
    folder = path.expanduser().absolute().parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f'{what}={str(path)!r}: {existing} is a file, not a folder, so {folder} cannot be created')
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f'{what}={str(path)!r}: no permission to write in {existing}')
