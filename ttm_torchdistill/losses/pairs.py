"""The feature pairs of the AT and VID losses, in torchdistill's ``at_pairs`` / ``feature_pairs`` schema
(``{pair name: {student: {io, path}, teacher: {io, path}, weight}}``), checked once and read from the I/O dicts, and
the losses' common part (:class:`PairedFeatureLoss`)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from ..methods import LossHooks
from .checks import number

__all__ = ['FeaturePair', 'PairedFeatureLoss', 'checked_pairs', 'weighted_sum']

_IO = ('input', 'output')
_SCHEMA = "{pair name: {student: {io: 'input' or 'output', path: module path}, teacher: {io, path}, weight: >= 0}}"


@dataclass(frozen=True)
class FeaturePair:
    """One pair: where the student's and the teacher's features are hooked, and the pair's weight."""

    owner: str
    """the loss and its parameter, for messages (``ExactATLoss: at_pairs.pair1``)"""
    name: str
    student_path: str
    student_io: str
    teacher_path: str
    teacher_io: str
    weight: float

    def student(self, io_dict: dict) -> object:
        return self._read(io_dict, 'student', self.student_path, self.student_io)

    def teacher(self, io_dict: dict) -> object:
        return self._read(io_dict, 'teacher', self.teacher_path, self.teacher_io)

    def _read(self, io_dict: dict, side: str, path: str, io: str) -> object:
        if io not in io_dict.get(path, {}):
            raise ValueError(f"{self.owner}: the {side}'s {path!r} ({io}) was not recorded: add {path!r} to "
                             f'train.{side}.forward_hook.{io}')
        return io_dict[path][io]


def _side(owner: str, name: str, side: str, entry: object) -> tuple[str, str]:
    ok = (isinstance(entry, Mapping) and set(entry) == {'io', 'path'} and entry['io'] in _IO
          and isinstance(entry['path'], str) and entry['path'].strip() != '')
    if not ok:
        raise ValueError(f"{owner}.{name}.{side}={entry!r} is invalid: accepted values are {{io: 'input' or 'output', "
                         'path: a module path}')
    return entry['path'], entry['io']


def checked_pairs(owner: str, pairs: object) -> tuple[FeaturePair, ...]:
    """``pairs`` checked, in their mapping's order; ``owner`` is the loss and its parameter (``ExactATLoss:
    at_pairs``). A bad entry is one ValueError line naming it."""
    if not isinstance(pairs, Mapping) or not pairs:
        raise ValueError(f'{owner}={pairs!r} is invalid: accepted values are a non-empty mapping {_SCHEMA}')
    checked = []
    for name, config in pairs.items():
        if not isinstance(config, Mapping) or not {'student', 'teacher'} <= set(config) or \
                not set(config) <= {'student', 'teacher', 'weight'}:
            raise ValueError(f'{owner}.{name}={config!r} is invalid: accepted values are {_SCHEMA}')
        student = _side(owner, name, 'student', config['student'])
        teacher = _side(owner, name, 'teacher', config['teacher'])
        weight = number(f'{owner}.{name}.weight', config.get('weight', 1.0), 'a finite number >= 0', lambda v: v >= 0)
        checked.append(FeaturePair(f'{owner}.{name}', str(name), *student, *teacher, weight))
    return tuple(checked)


def weighted_sum(pairs: tuple[FeaturePair, ...], terms: list[Tensor]) -> Tensor:
    """w_1 t_1 + w_2 t_2 + ... in order (with weights 1: the benchmark's ``sum`` of its per-pair losses, bit for
    bit)."""
    total = pairs[0].weight * terms[0]
    for pair, term in zip(pairs[1:], terms[1:], strict=True):
        total = total + pair.weight * term
    return total


class PairedFeatureLoss(LossHooks):
    """A loss summed over feature pairs (AT's, VID's): the weighted sum of :meth:`term` over the pairs, in order;
    :meth:`diagnostics` reports each pair's unweighted term, named by the pair."""

    def __init__(self, owner: str, pairs: object) -> None:
        super().__init__()
        self.pairs = checked_pairs(owner, pairs)
        self.diagnostic_names = tuple(pair.name for pair in self.pairs)
        self._last: Tensor | None = None

    def term(self, pair: FeaturePair, student_io_dict: dict, teacher_io_dict: dict) -> Tensor:
        """The loss of one pair (unweighted)."""
        raise NotImplementedError

    def forward(self, student_io_dict: dict, teacher_io_dict: dict, *args, **kwargs) -> Tensor:
        terms = [self.term(pair, student_io_dict, teacher_io_dict) for pair in self.pairs]
        self._last = torch.stack([term.detach() for term in terms])
        return weighted_sum(self.pairs, terms)

    def diagnostics(self) -> Tensor | None:
        """The last forward's per-pair terms (unweighted), in the pairs' order; None before the first forward."""
        return self._last
