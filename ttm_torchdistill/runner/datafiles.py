"""Data that cannot be read or batched names itself: a guard around the per-file loader of folder datasets, and the
batches of a loader guarded so that one that cannot be formed is one line naming the recipe's loader and dataset.

torchvision's ImageFolder / DatasetFolder read each sample with ``self.loader(path)``; PIL's errors
there (not an image, truncated) carry no path. The guard re-raises them as DataFileError with the
path, in the main process or in a loader worker (whose exception the DataLoader re-raises).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from ..errors import DataFileError, one_line

__all__ = ['BATCH_ERRORS', 'GuardedLoader', 'batch_error', 'cause', 'guard_datasets', 'guarded_batches']

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


BATCH_ERRORS = (RuntimeError, TypeError, ValueError, KeyError, IndexError, OSError)
"""what reading a sample or forming a batch raises for data that does not fit (images of different sizes in one
batch, a collate or transform that cannot take a sample); a loader worker's error arrives as one of these too"""
UNEQUAL_SIZES = ('stack expects each tensor to be equal size', 'Trying to resize storage that is not resizable')
"""torch's default collate on samples of different sizes: in the main process, and in a loader worker (which stacks
into shared memory sized for the first sample)"""


def cause(exc: BaseException) -> str:
    """``Type: message`` of a failure; for an error a loader worker raised (which the DataLoader re-raises with the
    worker's traceback as its message), the original exception's line."""
    text = str(exc)
    marker = 'Traceback (most recent call last):'
    if marker in text:
        lines = [line for line in text.rsplit(marker, 1)[1].splitlines() if line.strip()]
        top = [i for i, line in enumerate(lines) if not line[0].isspace()]
        if top:
            return one_line('\n'.join(lines[top[-1]:]))
    return f'{type(exc).__name__}: {one_line(exc)}'


def _hint(text: str, dataset: object) -> str:
    if any(message in text for message in UNEQUAL_SIZES):
        return (f' (its samples differ in size: give datasets.{dataset}\'s transform a crop or resize to one size, '
                'or a collate_fn that pads them)')
    return ''


def batch_error(where: str, dataset: object, what: str, exc: BaseException) -> DataFileError:
    """One line for a sample or batch of ``where`` (``RECIPE: train.train_data_loader (datasets.ID)``) that cannot be
    read or formed: ``what`` (``batch 3``, ``sample 0``) and the cause."""
    if isinstance(exc, DataFileError):  # an unreadable file, named by the guard
        return DataFileError(f'{where}: {what}: {exc}')
    text = cause(exc)
    return DataFileError(f'{where}: {what} cannot be formed: {text[:400]}{_hint(text, dataset)}')


def guarded_batches(loader: Iterable, where: str, dataset: object) -> Iterator:
    """The batches of ``loader``; one that cannot be read or formed is one DataFileError naming ``where``, the batch
    (counted from 1) and the cause (see :func:`batch_error`)."""
    iterator, index = None, 0
    while True:
        try:
            if iterator is None:
                iterator = iter(loader)
            batch = next(iterator)
        except StopIteration:
            return
        except (DataFileError, *BATCH_ERRORS) as exc:
            raise batch_error(where, dataset, f'batch {index + 1}', exc) from exc
        yield batch
        index += 1
