"""The per-epoch metrics record (``<run>.metrics.jsonl``, one JSON object per line): its name, fields, writing, reading.

A run's metrics file is named after its run log, or after its best checkpoint where it has no run log
(:func:`metrics_path`: ``run.log`` -> ``run.metrics.jsonl``).

The runner appends one record per epoch: the fields of :data:`FIELDS`, then the loss's diagnostics (each term's parts,
e.g. WTTM's ``u_gamma``, ITRD's ``corr``; see ``ttm_torchdistill.losses.diagnostics``). `plot`, TensorBoard and a
sweep's progress lines read them. Records carry no version: a reader takes any object with an integer ``epoch`` whose
other numbers are numbers (null where not finite).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import UsageError, one_line
from ..outputs import dumps_json

__all__ = ['FIELDS', 'SUFFIX', 'append_record', 'count_records', 'diagnostic_keys', 'metrics_path', 'read_records']

SUFFIX = '.metrics.jsonl'
"""how a metrics file's name ends"""

FIELDS = ('epoch', 'train_loss', 'lr', 'train_images_per_s', 'train_s', 'val_top1', 'val_top5', 'recipe')
"""the fields of every record; any other number is a diagnostic of the loss"""
NUMBERS = ('train_loss', 'lr', 'train_images_per_s', 'train_s', 'val_top1', 'val_top5')


def metrics_path(base: Path) -> Path:
    """A run's metrics file, ``<stem>.metrics.jsonl`` beside ``base``: its run log, else its best checkpoint."""
    return base.with_name(base.stem + SUFFIX)


def append_record(path: str | os.PathLike, record: dict) -> None:
    """Append one epoch's record (strict JSON on one line)."""
    with Path(path).open('a') as f:
        f.write(dumps_json(record, indent=None) + '\n')


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def read_records(path: Path) -> list[dict]:
    """The records of a metrics file (none when no epoch has finished yet); one UsageError line for a file that is
    not one."""
    try:
        lines = path.read_text().splitlines()
    except UnicodeDecodeError:
        raise UsageError(f'{path}: not a metrics file (not text)') from None
    except OSError as exc:
        raise UsageError(f'{path}: cannot read the metrics file ({exc.strerror or one_line(exc)})') from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f'{path}: not a metrics file: line {number} is not JSON ({exc.msg})') from None
        if not isinstance(record, dict) or not isinstance(record.get('epoch'), int):
            raise UsageError(f'{path}: not a metrics file: line {number} is not a record with an epoch')
        for key, value in record.items():
            if (key in NUMBERS or key not in FIELDS) and value is not None and not _is_number(value):
                raise UsageError(f'{path}: not a metrics file: line {number}: {key}={value!r} is not a number')
        records.append(record)
    return records


def count_records(path: Path) -> int:
    """Epochs recorded so far (0 for a missing file); for progress lines, without checking the records."""
    try:
        return sum(1 for line in path.read_text(errors='replace').splitlines() if line.strip())
    except OSError:
        return 0


def diagnostic_keys(records: list[dict]) -> list[str]:
    """The diagnostics the records hold, in the order they first appear."""
    return list(dict.fromkeys(k for r in records for k in r if k not in FIELDS))
