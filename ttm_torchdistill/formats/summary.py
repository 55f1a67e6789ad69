"""The run summary (`--summary`, a sweep run's ``summary.json``): its fields, version, writing, reading and checking.

`train`, `test` and `calibrate` write one (``kind``); `table` tabulates the training ones, a sweep reads a run's best
validation top-1 from it and `plot` its metrics file. The JSON is strict: a value that is not a finite number is
written as null. Files without a ``version`` are version 1 (written before it was recorded).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from ..errors import one_line
from ..outputs import write_json

__all__ = ['KINDS', 'VERSION', 'has_test_pass', 'is_finite_number', 'is_summary', 'load_summary', 'nonfinite_values',
           'read_training_summary', 'summary_problem', 'write_summary']

VERSION = 1
KINDS = ('train', 'test', 'calibrate')
"""``kind``: the command that wrote it; files without one (older versions) are training runs"""
TRAINING_KEYS = ('recipe', 'best_val_top1', 'student_test_top1')
"""what a training run's summary always holds"""
NUMBER_KEYS = ('best_val_top1', 'student_test_top1', 'teacher_test_top1', 'paper_top1')
"""keys that hold a number, or null (not measured, or not finite in strict JSON)"""


def write_summary(path: str | os.PathLike, summary: dict) -> None:
    """Write ``summary`` (with this format's version) atomically as strict JSON."""
    write_json(Path(path).expanduser(), {'version': VERSION, **summary})


def load_summary(path: Path) -> tuple[object, str | None]:
    """(the file's JSON, None), or (None, why it cannot be read)."""
    try:
        return json.loads(path.read_text()), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f'not readable JSON ({one_line(exc)})'


def is_summary(data: object) -> bool:
    """Whether ``data`` is an object a summary could be (any kind)."""
    return isinstance(data, dict)


def is_finite_number(value: object) -> bool:
    """An int or float (not a bool) that is neither NaN nor infinite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number_or_null(value: object) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def summary_problem(data: object) -> str | None:
    """Why ``data`` is not a training run's summary written by `ttm-distill train` (a foreign or hand-edited file),
    or None."""
    if not isinstance(data, dict):
        return 'not a JSON object'
    if not all(k in data for k in TRAINING_KEYS):
        return 'missing ' + ', '.join(k for k in TRAINING_KEYS if k not in data)
    version = data.get('version', 1)
    if not isinstance(version, int) or isinstance(version, bool) or version > VERSION:
        return f'version={version!r}: this ttm-distill reads versions up to {VERSION}'
    if not isinstance(data['recipe'], str) or not data['recipe']:
        return f'recipe={data["recipe"]!r}: expected a recipe name'
    if 'kind' in data and data['kind'] not in KINDS:
        return f'kind={data["kind"]!r}: expected one of {", ".join(KINDS)}'
    for key in NUMBER_KEYS:
        if not _number_or_null(data.get(key)):
            return f'{key}={data[key]!r}: expected a number or null'
    overrides = data.get('overrides')
    if overrides is not None and not (isinstance(overrides, list) and all(isinstance(o, str) for o in overrides)):
        return f'overrides={overrides!r}: expected a list of KEY=VALUE strings'
    return None


def read_training_summary(path: Path) -> tuple[dict | None, str | None]:
    """(a training run's summary, None), or (None, why the file is not one: unreadable, another command's, foreign,
    hand-edited or of a newer version, said as ``table`` notes it). The one test of a finished run: `sweep`, its
    `lockstep` groups and `table` all count a run as finished by it."""
    data, unreadable = load_summary(path)
    if unreadable is not None:
        return None, f'skipped, {unreadable}'
    if is_summary(data) and data.get('kind') in KINDS and data['kind'] != 'train':
        return None, f'a {data["kind"]} summary (`ttm-distill {data["kind"]}`), not a training run: left out'
    problem = summary_problem(data)
    if problem is not None:
        return None, f'skipped, not a `ttm-distill train --summary` file: {problem}'
    return data, None


def has_test_pass(summary: dict) -> bool:
    """Whether the run had a test pass: `train --no-test` writes null for the student's test top-1 (an accuracy
    measured on a test set is a number, so a null there means no test pass, not a non-finite one)."""
    return summary.get('student_test_top1') is not None


def nonfinite_values(summary: dict) -> list[str]:
    """``key is VALUE`` for each result of a training summary that should be a finite number and is not."""
    keys = ['best_val_top1'] + (['student_test_top1'] if has_test_pass(summary) else [])
    return [f'{key} is {"null" if summary[key] is None else summary[key]}' for key in keys
            if not is_finite_number(summary[key])]
