"""The run summary (`--summary`, a sweep run's ``summary.json``): its record, version, writing, reading and checking.

`train`, `test` and `calibrate` each write one (``kind``) as a :class:`RunSummary`; `table` tabulates the training
ones, a sweep reads a run's best validation top-1 from it and `plot` its metrics file. The JSON is strict: a value that
is not a finite number is written as null. Files without a ``version`` are version 1 (written before it was
recorded). Keys a summary's kind does not hold (another tool's) are accepted and kept, after the known ones.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import UsageError, one_line
from ..outputs import write_json

__all__ = ['KINDS', 'VERSION', 'RunSummary', 'has_test_pass', 'is_finite_number', 'load_summary', 'nonfinite_values',
           'read_training_summary', 'summary_problem', 'write_summary']

VERSION = 1
KINDS = ('train', 'test', 'calibrate')
"""``kind``: the command that wrote it; files without one (older versions) are training runs"""
RUNS = ('train', 'test')
"""the kinds that report a student's run: its training, or the test pass of its best checkpoint"""
TRAINING_KEYS = ('recipe', 'best_val_top1', 'student_test_top1')
"""what a training run's summary always holds"""
NUMBER_KEYS = ('best_val_top1', 'student_test_top1', 'teacher_test_top1', 'paper_top1')
"""keys that hold a number, or null (not measured, or not finite in strict JSON)"""


def _of(*kinds: str) -> Any:
    """A field that the summaries of ``kinds`` hold, null where not measured (or not finite)."""
    return field(default=None, metadata={'kinds': kinds})


@dataclass(frozen=True)
class RunSummary:
    """What a command's ``--summary`` holds: :meth:`to_json` writes ``version``, then the fields of its ``kind`` in this
    order, then :attr:`extra`. Read from a file, the fields :func:`summary_problem` does not check are as written."""

    kind: str = field(metadata={'kinds': KINDS})
    recipe: str = field(metadata={'kinds': KINDS})
    """the shipped recipe's name, or the recipe file as given"""
    world_size: int | None = _of(*RUNS)
    device: str | None = _of(*RUNS)
    epochs_run: int | None = _of('train')
    """the epochs this command trained (after --resume, those after the checkpoint's)"""
    best_val_top1: float | None = _of(*RUNS)
    train_images_per_s: float | None = _of('train')
    """mean training images per second"""
    teacher_test_top1: float | None = _of(*RUNS)
    teacher_test_top5: float | None = _of(*RUNS)
    student_test_top1: float | None = _of(*RUNS)
    """null: no test pass (`train --no-test`)"""
    student_test_top5: float | None = _of(*RUNS)
    wall_s: float | None = _of(*RUNS)
    best_ckpt: str | None = _of(*RUNS)
    last_ckpt: str | None = _of(*RUNS)
    metrics: str | None = _of(*RUNS)
    """the per-epoch metrics file (``formats.metrics``), absolute"""
    amp: str | None = _of(*RUNS)
    channels_last: bool | None = _of(*RUNS)
    seed: int | None = _of(*RUNS)
    overrides: tuple[str, ...] | None = _of(*RUNS)
    """the --set options, ``KEY=VALUE``"""
    paper_top1: float | None = _of(*RUNS)
    """the top-1 the paper reports (the recipe's ``paper.top1``)"""
    split: str | None = _of('calibrate')
    """calibrate: val | test"""
    samples: int | None = _of('calibrate')
    top1: float | None = _of('calibrate')
    """calibrate: the teacher's top-1"""
    nll: float | None = _of('calibrate')
    ece: float | None = _of('calibrate')
    temperature: float | None = _of('calibrate')
    """calibrate: T*, the temperature that minimises NLL"""
    nll_scaled: float | None = _of('calibrate')
    ece_scaled: float | None = _of('calibrate')
    gamma_calibrated: float | None = _of('calibrate')
    recipe_gamma: float | None = _of('calibrate')
    u_gamma_recipe: float | None = _of('calibrate')
    u_gamma_calibrated: float | None = _of('calibrate')
    version: int = VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    """the file's keys that its kind does not hold (another tool's), as read"""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f'kind={self.kind!r}: expected one of {", ".join(KINDS)}')
        if isinstance(self.overrides, list):
            object.__setattr__(self, 'overrides', tuple(self.overrides))

    def to_json(self) -> dict:
        """The JSON object written (non-finite numbers become null when it is written)."""
        data: dict[str, Any] = {'version': self.version}
        for f in fields(self):
            if self.kind in f.metadata.get('kinds', ()):
                value = getattr(self, f.name)
                data[f.name] = list(value) if isinstance(value, tuple) else value
        return {**data, **self.extra}

    @classmethod
    def from_json(cls, data: object) -> RunSummary:
        """The summary :meth:`to_json` (or an earlier version) wrote; one UsageError line saying what differs (checked
        as :func:`summary_problem` checks, the keys a training run always holds asked of training runs only)."""
        kind = data.get('kind', 'train') if isinstance(data, dict) else None
        problem = _problem(data, TRAINING_KEYS if kind == 'train' else ('recipe',))
        if problem is not None:
            raise UsageError(f'not a run summary: {problem}')
        return _summary(data)


def _summary(data: dict) -> RunSummary:
    """The record of checked summary JSON."""
    kind = data.get('kind', 'train')
    names = {f.name for f in fields(RunSummary) if kind in f.metadata.get('kinds', ())}
    known = {key: value for key, value in data.items() if key in names}
    extra = {key: value for key, value in data.items() if key not in names and key != 'version'}
    return RunSummary(**{'kind': kind, **known}, version=data.get('version', 1), extra=extra)


def write_summary(path: str | os.PathLike, summary: RunSummary) -> None:
    """Write ``summary`` atomically as strict JSON."""
    write_json(Path(path).expanduser(), summary.to_json())


def load_summary(path: Path) -> tuple[object, str | None]:
    """(the file's JSON, None), or (None, why it cannot be read)."""
    try:
        return json.loads(path.read_text()), None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f'not readable JSON ({one_line(exc)})'


def is_finite_number(value: object) -> bool:
    """An int or float (not a bool) that is neither NaN nor infinite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _number_or_null(value: object) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _problem(data: object, required: tuple[str, ...]) -> str | None:
    if not isinstance(data, dict):
        return 'not a JSON object'
    if not all(k in data for k in required):
        return 'missing ' + ', '.join(k for k in required if k not in data)
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


def summary_problem(data: object) -> str | None:
    """Why ``data`` is not a training run's summary written by `ttm-distill train` (a foreign or hand-edited file),
    or None."""
    return _problem(data, TRAINING_KEYS)


def read_training_summary(path: Path) -> tuple[RunSummary | None, str | None]:
    """(a training run's summary, None), or (None, why the file is not one: unreadable, another command's, foreign,
    hand-edited or of a newer version, said as ``table`` notes it). The one test of a finished run: `sweep`, its
    `lockstep` groups and `table` all count a run as finished by it."""
    data, unreadable = load_summary(path)
    if unreadable is not None:
        return None, f'skipped, {unreadable}'
    if isinstance(data, dict) and data.get('kind') in KINDS and data['kind'] != 'train':
        return None, f'a {data["kind"]} summary (`ttm-distill {data["kind"]}`), not a training run: left out'
    problem = summary_problem(data)
    if problem is not None:
        return None, f'skipped, not a `ttm-distill train --summary` file: {problem}'
    return _summary(data), None


def has_test_pass(summary: RunSummary) -> bool:
    """Whether the run had a test pass: `train --no-test` writes null for the student's test top-1 (an accuracy
    measured on a test set is a number, so a null there means no test pass, not a non-finite one)."""
    return summary.student_test_top1 is not None


def nonfinite_values(summary: RunSummary) -> list[str]:
    """``key is VALUE`` for each result of a training summary that should be a finite number and is not."""
    results = {'best_val_top1': summary.best_val_top1}
    if has_test_pass(summary):
        results['student_test_top1'] = summary.student_test_top1
    return [f'{key} is {"null" if value is None else value}' for key, value in results.items()
            if not is_finite_number(value)]
