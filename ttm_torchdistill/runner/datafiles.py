"""Unreadable data files name themselves: a guard around the per-file loader of folder datasets.

torchvision's ImageFolder / DatasetFolder read each sample with ``self.loader(path)``; PIL's errors
there (not an image, truncated) carry no path. The guard re-raises them as DataFileError with the
path, in the main process or in a loader worker (whose exception the DataLoader re-raises).
"""
from __future__ import annotations

from collections.abc import Callable

from ..errors import DataFileError, one_line

__all__ = ['GuardedLoader', 'guard_datasets']

WRAPPED = ('org_dataset', 'dataset', 'datasets')
"""attributes under which dataset wrappers (torchdistill's, Subset, ConcatDataset) keep the wrapped dataset"""


class GuardedLoader:
    """``load(path)``, with a failure to read the file re-raised as DataFileError naming ``path``."""

    def __init__(self, load: Callable) -> None:
        self.load = load

    def __call__(self, path):
        try:
            return self.load(path)
        except (OSError, SyntaxError, ValueError) as exc:  # PIL: UnidentifiedImageError, truncated, bad header
            raise DataFileError(f'cannot read data file {path}: {one_line(exc)}') from exc


def guard_datasets(datasets: dict) -> None:
    """Install GuardedLoader on every dataset (and wrapped dataset) with ``samples`` and a ``loader``."""
    stack, seen = list(datasets.values()), set()
    while stack:
        dataset = stack.pop()
        if id(dataset) in seen:
            continue
        seen.add(id(dataset))
        loader = getattr(dataset, 'loader', None)
        if hasattr(dataset, 'samples') and callable(loader) and not isinstance(loader, GuardedLoader):
            dataset.loader = GuardedLoader(loader)
        for name in WRAPPED:
            inner = getattr(dataset, name, None)
            stack.extend(inner if isinstance(inner, (list, tuple)) else [inner] if inner is not None else [])
