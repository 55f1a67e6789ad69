"""One run as data: its recipe, its --set overrides and the options of `ttm-distill train` / `test` / `calibrate`.

The command line builds a :class:`RunDescription`, the runner runs it, and a sweep plans its runs as descriptions,
keeps them in its manifest and turns one into a command line only when it starts that run's process
(:meth:`RunDescription.argv`). An :class:`Override` is a dotted key and its value as YAML text; the recipe document
parses the YAML (``ttm_torchdistill.recipe``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .errors import UsageError

__all__ = ['COMMANDS', 'Override', 'RunDescription', 'description_problem']

COMMANDS = ('train', 'test', 'calibrate')
CHOICES = {'command': COMMANDS, 'device': (None, 'cuda', 'cpu'), 'amp': (None, 'bf16', 'fp16')}
"""the fields that take one of a few values"""


@dataclass(frozen=True)
class Override:
    """One ``--set KEY=VALUE``: a dotted key and its value as YAML text."""

    key: str
    value: str

    @classmethod
    def parse(cls, text: str) -> Override:
        key, sep, value = text.partition('=')
        if not sep or not all(part.strip() for part in key.split('.')):
            raise UsageError(f'--set {text!r}: expected KEY=VALUE with a dotted KEY such as train.num_epochs=10')
        return cls(key, value)

    @property
    def keys(self) -> list[str]:
        return self.key.split('.')

    def __str__(self) -> str:
        return f'{self.key}={self.value}'


@dataclass(frozen=True)
class RunDescription:
    """What `ttm-distill COMMAND RECIPE [options]` runs. ``overrides`` may be given as ``KEY=VALUE`` strings."""

    recipe: str
    overrides: tuple[Override, ...] = ()
    command: str = 'train'
    device: str | None = None
    run_log: str | None = None
    summary: str | None = None
    resume: bool = False
    seed: int | None = None
    amp: str | None = None
    channels_last: bool = False
    compile: str | None = None
    """torch.compile mode for student and teacher, e.g. 'default'; None: eager"""
    test: bool = True
    """False skips the test pass (hyperparameter searches must not look at the test split)"""
    tensorboard: str | None = None
    """folder for TensorBoard per-epoch curves (needs the tensorboard package)"""
    allow_recipe_change: bool = False
    """--resume even where the recipe's models, data, loss, optimizer or scheduler differ from the checkpoint's"""
    check: bool = False
    """validate and build everything, then stop: no training, nothing written"""
    error_record: str | None = None
    """where a failure's one line is written as well (a sweep run's ``error.txt``), so that its launcher reads it"""
    debug: bool = False
    quiet: bool = False
    """log warnings only (not a flag: the demo runs many short trainings)"""

    def __post_init__(self) -> None:
        if self.command not in COMMANDS:
            raise ValueError(f'command={self.command!r}: expected one of {", ".join(COMMANDS)}')
        overrides = tuple(o if isinstance(o, Override) else Override.parse(o) for o in self.overrides)
        object.__setattr__(self, 'overrides', overrides)
        object.__setattr__(self, 'recipe', str(self.recipe))  # a path is given as text

    def replace(self, **changes: Any) -> RunDescription:
        return dataclasses.replace(self, **changes)

    @property
    def override_texts(self) -> list[str]:
        """The overrides as ``KEY=VALUE`` strings, as --set takes them and summaries record them."""
        return [str(o) for o in self.overrides]

    def argv(self) -> list[str]:
        """The `ttm-distill` arguments that run this description."""
        args = [self.command, self.recipe]
        for override in self.overrides:
            args += ['--set', str(override)]
        for flag, value in (('--device', self.device), ('--run-log', self.run_log), ('--summary', self.summary),
                            ('--seed', self.seed), ('--amp', self.amp), ('--tensorboard', self.tensorboard),
                            ('--error-record', self.error_record)):
            if value is not None:
                args += [flag, str(value)]
        if self.compile is not None:
            args += ['--compile', self.compile]
        for flag, on in (('--channels-last', self.channels_last), ('--no-test', not self.test),
                         ('--resume', self.resume), ('--allow-recipe-change', self.allow_recipe_change),
                         ('--check', self.check), ('--debug', self.debug)):
            if on:
                args.append(flag)
        return args

    def to_json(self) -> dict:
        """A JSON object (a sweep's manifest keeps each run's)."""
        data = dataclasses.asdict(self)
        data['overrides'] = self.override_texts
        return data

    @classmethod
    def from_json(cls, data: object) -> RunDescription:
        """The description :meth:`to_json` wrote; one UsageError line saying what differs (a tampered or foreign
        record)."""
        problem = description_problem(data)
        if problem is not None:
            raise UsageError(f'not a run description: {problem}')
        return cls(**{**data, 'overrides': tuple(data.get('overrides', []))})


def _expected(field: dataclasses.Field, value: object) -> str | None:
    """What JSON type ``field`` takes, where ``value`` is not of it (else None)."""
    if isinstance(field.default, bool):
        return None if isinstance(value, bool) else 'true or false'
    if field.name == 'seed':
        ok = value is None or (isinstance(value, int) and not isinstance(value, bool))
        return None if ok else 'an integer or null'
    if field.name == 'overrides':
        ok = isinstance(value, list) and all(isinstance(o, str) for o in value)
        return None if ok else 'a list of KEY=VALUE strings'
    if field.default is None:
        return None if value is None or isinstance(value, str) else 'a string or null'
    return None if isinstance(value, str) and value else 'a non-empty string'


def description_problem(data: object) -> str | None:
    """What in ``data`` differs from what :meth:`RunDescription.to_json` writes, or None."""
    if not isinstance(data, dict):
        return f'a {type(data).__name__}, not an object'
    fields = {f.name: f for f in dataclasses.fields(RunDescription)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        return f'unknown field(s) {", ".join(unknown)}'
    if 'recipe' not in data:
        return 'no recipe'
    for name, value in data.items():
        expected = _expected(fields[name], value)
        if expected is not None:
            return f'{name}={value!r}: expected {expected}'
        if name in CHOICES and value not in CHOICES[name]:
            return f'{name}={value!r}: expected one of {", ".join(str(c) for c in CHOICES[name] if c is not None)}'
    return None
