"""The method registry: each distillation method declared once, next to its loss (:func:`register_method`, in the
spirit of torchdistill's registries and timm's ``register_model``, with the metadata on the registered entry), the
one protocol through which the runner asks a loss what it needs (:class:`LossHooks`), and the loss-term entries
recipes are written with.

A :class:`Method` says its name (the recipe folder, `new-recipe --method`), the key of its loss in torchdistill's
registry, the recipe entry it writes, its `sweep --grid` short names and what they mean, whether the cross entropy
with the labels is a term of its own, and what `new-recipe --gamma/--beta` mean for it. The command line, the sweep,
`new-recipe`, `calibrate`, the recipe view and the paper's renderers ask the registry; nothing else lists methods.
Importing ``ttm_torchdistill`` registers the package's methods (their loss modules declare them).
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from torch import Tensor, nn

__all__ = ['CROSS_ENTROPY_ENTRY', 'FEATURE_WEIGHT', 'BaseTerm', 'FeatureRecipe', 'FeatureTap', 'Knob', 'LossHooks',
           'Method', 'ModelFeatures', 'feature_methods', 'hooked', 'logit_entry', 'logit_methods', 'method_by_loss',
           'method_named', 'methods', 'paired_maps', 'register_method', 'short_names', 'tap_pairs']

KnobKind = Literal['exponent', 'inverse_temperature', 'weight']
"""what a `new-recipe --gamma` value is: TTM's power exponent (temperature on the teacher only), 1 / the temperature
of both models' softmax, or a weight"""


@dataclass(frozen=True)
class Knob:
    """What `new-recipe --gamma` or `--beta` sets in a method's loss."""

    kind: KnobKind
    meaning: str
    """for messages and help, e.g. 'gamma = 1/temperature', 'the NCKD weight'"""

    def check(self, flag: str, value: float, method: str) -> str | None:
        """Why ``value`` is out of range for this knob (a message after ``FLAG VALUE: ``), or None."""
        positive = self.kind != 'weight'
        if math.isfinite(value) and (value > 0 if positive else value >= 0):
            return None
        paper = ' (the paper uses 0 < gamma <= 1)' if self.kind == 'exponent' else ''
        return f'expected a finite number {">" if positive else ">="} 0 ({method}: {self.meaning}){paper}'


FEATURE_WEIGHT = Knob('weight', "the weight of its feature term (the CRD benchmark's -b, its default)")
"""what `new-recipe --beta` sets for a feature method"""


@dataclass(frozen=True)
class BaseTerm:
    """What `new-recipe` knows of the base recipe's term that the new method's replaces."""

    method: Method | None
    """the base term's method (None: a cross-entropy term)"""
    kwargs: dict
    cifar: bool
    """the base trains on CIFAR (the methods' authors set some values per dataset)"""

    def same(self, method: Method) -> bool:
        return self.method is not None and self.method.name == method.name

    def own(self, method: Method, key: str, default: object = None) -> object:
        """The base term's ``key`` where the base has the same method, else ``default``."""
        return self.kwargs.get(key, default) if self.same(method) else default

    def gamma(self, kinds: tuple[KnobKind, ...]) -> float | None:
        """The base term's gamma (1 / its temperature, for a temperature method) where its gamma is of one of
        ``kinds``, else None."""
        knob = self.method.gamma if self.method is not None else None
        if knob is None or knob.kind not in kinds:
            return None
        if knob.kind == 'inverse_temperature':
            temperature = self.kwargs.get('temperature')
            return 1.0 / temperature if temperature else None
        return self.kwargs.get('gamma')


@dataclass(frozen=True)
class FeatureTap:
    """Where a torchdistill ``forward_hook`` catches a feature: ``io`` (``'input'`` or ``'output'``) of the module at
    ``path`` inside the model, with the feature's ``channels`` and square spatial ``size`` at the recipe's input size
    (1 for a flattened embedding)."""

    path: str
    io: str
    channels: int
    size: int

    def __post_init__(self) -> None:
        if self.io not in ('input', 'output'):
            raise ValueError(f"FeatureTap io={self.io!r}: expected 'input' or 'output'")
        if self.channels < 1 or self.size < 1:
            raise ValueError(f'FeatureTap channels={self.channels}, size={self.size}: both must be >= 1')


@dataclass(frozen=True)
class ModelFeatures:
    """What a feature method may hook in one model: the CRD benchmark's feature list (``forward(x, is_feat=True)``:
    stem, stages, flattened embedding last) and the module whose output, flattened, is the embedding."""

    entries: tuple[FeatureTap, ...]
    pooled: FeatureTap


@dataclass(frozen=True)
class FeatureRecipe:
    """A feature method's recipe parts for one pair: what each model's ``forward_hook`` catches, the student's
    auxiliary model wrapper (its YAML lines, none: the student is wrapped in DDP), the wrapper's modules whose outputs
    the loss reads, and the loss's kwargs (YAML lines)."""

    teacher_hooks: tuple[FeatureTap, ...]
    student_hooks: tuple[FeatureTap, ...]
    kwargs: list[str]
    wrapper: list[str] = field(default_factory=list)
    wrapper_outputs: tuple[str, ...] = ()

    @staticmethod
    def _hook(paths: list[tuple[str, str]]) -> list[str]:
        listed = {io: '[' + ', '.join(f"'{p}'" for i, p in paths if i == io) + ']' for io in ('input', 'output')}
        return ['forward_hook:', f'  input: {listed["input"]}', f'  output: {listed["output"]}']

    def teacher_lines(self) -> list[str]:
        """The ``train.teacher`` entry: frozen, its features hooked."""
        return ['teacher:', "  forward_proc: 'forward_batch_only'", '  sequential: []',
                *(f'  {line}' for line in self._hook([(t.io, t.path) for t in self.teacher_hooks])),
                '  requires_grad: False']

    def student_lines(self) -> list[str]:
        """The ``train.student`` entry: hooked (under ``model.`` inside the wrapper, which wraps the student in DDP
        itself), else wrapped in DDP."""
        prefix = 'model.' if self.wrapper else ''
        hooks = [(t.io, prefix + t.path) for t in self.student_hooks] + [('output', o) for o in self.wrapper_outputs]
        wrapper = ['auxiliary_model_wrapper:', *(f'  {line}' for line in self.wrapper)] if self.wrapper else []
        return ['student:', "  forward_proc: 'forward_batch_only'", '  adaptations:', '  sequential: []',
                *(f'  {line}' for line in wrapper + self._hook(hooks)),
                '  wrapper:' if self.wrapper else "  wrapper: 'DistributedDataParallel'", '  requires_grad: True',
                '  frozen_modules: []']

    def term_lines(self, name: str, key: str, weight: float) -> list[str]:
        """Term ``name``: loss ``key`` with these kwargs, at ``weight``."""
        return [f'{name}:', '  criterion:', f"    key: '{key}'", '    kwargs:',
                *(f'      {line}' for line in self.kwargs), f'  weight: {float(weight)!r}']


def tap_pairs(name: str, teacher: tuple[FeatureTap, ...], student: list[tuple[str, str]]) -> list[str]:
    """A loss kwarg ``name`` of numbered feature pairs (torchdistill's ATLoss schema): the student's (path, io) with
    the teacher's tap of the same index."""
    lines = [f'{name}:']
    for index, (tap, (path, io)) in enumerate(zip(teacher, student, strict=True), start=1):
        lines += [f'  pair{index}:', '    student:', f"      path: '{path}'", f"      io: '{io}'", '    teacher:',
                  f"      path: '{tap.path}'", f"      io: '{tap.io}'"]
    return lines


def paired_maps(teacher: ModelFeatures, student: ModelFeatures) -> tuple[tuple[FeatureTap, ...], ...]:
    """The entries 1..-2 of both lists, paired in order (the longer list cut, as the benchmark's zip does): (teacher's,
    student's)."""
    t, s = teacher.entries[1:-1], student.entries[1:-1]
    n = min(len(t), len(s))
    return t[:n], s[:n]


@dataclass(frozen=True)
class Method:
    """A distillation method: one declaration, next to its loss."""

    name: str
    """the recipe folder, `new-recipe --method` (``wttm``)"""
    loss_key: str
    """its loss in torchdistill's mid-level loss registry (``WTTMLoss``)"""
    short_names: dict[str, str] = field(default_factory=dict)
    """`sweep --grid` short names -> what each parameter of the loss means"""
    weight_name: str | None = None
    """the `sweep --grid` short name of the term's ``weight`` (the feature methods' ``beta``: the CRD benchmark's
    ``-b``; CRD's and ITRD's ``mu``, Eq. 23), None: the weight has no short name"""
    aliases: dict[str, str] = field(default_factory=dict)
    """`sweep --grid` short names of loss parameters whose own names mean something else in other methods: short
    name -> the parameter (CRD's ``nce_temperature`` -> ``temperature``)"""
    logit: bool = True
    """a loss on both models' logits: the term `new-recipe` writes and replaces"""
    separate_ce: bool = False
    """the cross entropy with the labels is a term of its own (else the loss holds it)"""
    gamma: Knob | None = None
    """what `new-recipe --gamma` sets"""
    beta: Knob | None = None
    """what `new-recipe --beta` sets"""
    beta_carries: bool = False
    """`new-recipe` from a base of another method needs no --beta (the method's default fits any pair)"""
    recipe_kwargs: Callable[[Method, float | None, float | None, BaseTerm], dict[str, object]] | None = None
    """`new-recipe`'s kwargs for the method's term (values as written in YAML): from the method, --gamma, --beta
    (None: not given) and the base's term"""
    recipe: Callable[[ModelFeatures, ModelFeatures], FeatureRecipe] | None = None
    """a feature method: its recipe parts from the teacher's and the student's features (`new-recipe` and the paper's
    recipes write them); its term sits beside a cross-entropy term"""
    default_weight: float = 1.0
    """the term's weight where nothing else sets it (a feature method's: the CRD benchmark's ``-b``)"""
    loss_class: type | None = None
    """the package's loss class (set by :func:`register_method`); None for a loss of torchdistill's own"""

    @property
    def entry(self) -> str:
        """The name of the loss-term entry it writes under ``sub_terms``."""
        return self.name

    def sets(self, name: str, kwargs: dict) -> bool:
        """Whether a term of this method whose loss has ``kwargs`` sets the short name ``name`` (a loss parameter it
        gives, or its weight)."""
        return self.aliases.get(name, name) in kwargs or name == self.weight_name

    def param(self, name: str) -> str | None:
        """The loss parameter short name ``name`` reaches (None: the term's weight)."""
        return None if name == self.weight_name else self.aliases.get(name, name)

    def lines(self, values: dict[str, object]) -> list[str]:
        """The method's term, ``values`` as its kwargs, as the lines of a ``sub_terms`` entry."""
        return logit_entry(self.entry, self.loss_key, values)


_METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Callable[[type | None], type | None]:
    """Declare ``method``; as a class decorator, its loss class (which then knows its method as ``cls.method``).
    ``register_method(Method(...))(None)`` declares a method whose loss is torchdistill's own."""
    def register(cls: type | None) -> type | None:
        entry = dataclasses.replace(method, loss_class=cls)
        known = _METHODS.get(entry.name)
        if known is not None and known.loss_key != entry.loss_key:
            raise ValueError(f'method {entry.name!r} is registered already, for {known.loss_key}')
        _METHODS[entry.name] = entry
        if cls is not None:
            cls.method = entry
        return cls

    return register


def methods() -> list[Method]:
    """Every registered method, in the order of registration."""
    return list(_METHODS.values())


def logit_methods() -> list[Method]:
    """The methods whose loss reads both models' logits (`new-recipe --method`)."""
    return [m for m in _METHODS.values() if m.logit]


def feature_methods() -> list[Method]:
    """The methods whose recipes hook the models' features (:attr:`Method.recipe`)."""
    return [m for m in _METHODS.values() if m.recipe is not None]


def method_named(name: str) -> Method | None:
    """The method registered as ``name``, or None."""
    return _METHODS.get(name)


def method_by_loss(loss_key: object) -> Method | None:
    """The method whose loss is registered as ``loss_key``, or None."""
    return next((m for m in _METHODS.values() if m.loss_key == loss_key), None)


def short_names() -> dict[str, tuple[str, ...]]:
    """Each `sweep --grid` short name -> the loss keys of the methods that have it (a recipe's one term among them
    that sets it), names in the order methods declare them."""
    names: dict[str, list[str]] = {}
    for method in _METHODS.values():
        for name in (*method.short_names, *method.aliases, *([method.weight_name] if method.weight_name else [])):
            names.setdefault(name, []).append(method.loss_key)
    return {name: tuple(keys) for name, keys in names.items()}


class LossHooks(nn.Module):
    """What the runner may ask a loss (a loss term, or a module inside one): a loss of this package derives from it,
    and a loss that does not is asked nothing (the defaults hold)."""

    min_batch_size: int = 1
    """the smallest batch it can take (ITRD's batch standard deviation: 2): the runner refuses a loader whose
    smallest batch is below it"""
    needs_class_indices: bool = False
    """its targets are one class index per sample: a soft-target collate (Mixup/CutMix) is refused"""
    diagnostic_names: tuple[str, ...] = ()
    """what each value of :meth:`diagnostics` is (the runner logs their epoch means)"""

    @property
    def needs_epoch(self) -> bool:
        """Whether it changes over epochs (DKD's warm-up), so the recipe's pre-epoch process must tell it the epoch
        (:meth:`set_epoch`)."""
        return False

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` (torchdistill's index, from 0)."""

    def diagnostics(self) -> Tensor | None:
        """The last forward's values, in :attr:`diagnostic_names` order (float, on the loss's device, read without a
        host synchronisation); None before the first forward."""
        return None

    @property
    def last_parts(self) -> dict[str, float]:
        """:meth:`diagnostics` by name; empty before the first forward."""
        values = self.diagnostics()
        return {} if values is None else dict(zip(self.diagnostic_names, values.tolist(), strict=True))


def hooked(term: object) -> list[LossHooks]:
    """The modules of a loss term (the term itself, or what a loss wrapper holds) that the runner may ask."""
    modules: Iterable[object] = term.modules() if isinstance(term, nn.Module) else [term]
    return [m for m in modules if isinstance(m, LossHooks)]


CROSS_ENTROPY_ENTRY = ['ce:', '  criterion:', "    key: 'CrossEntropyLoss'", '    kwargs:', "      reduction: 'mean'",
                       '  criterion_wrapper:', "    key: 'SimpleLossWrapper'", '    kwargs:', '      input:',
                       '        is_from_teacher: False', "        module_path: '.'", "        io: 'output'",
                       '      target:', '        uses_label: True', '  weight: 1.0']
"""term ``ce``: CrossEntropyLoss on the student's output and the labels, weight 1"""


def logit_entry(name: str, key: str, values: dict[str, object]) -> list[str]:
    """Term ``name``: loss ``key`` on both models' outputs (the logits), with ``values`` (as written) as its kwargs,
    weight 1."""
    io = {'student_module_path': "'.'", 'student_module_io': "'output'", 'teacher_module_path': "'.'",
          'teacher_module_io': "'output'"}
    return [f'{name}:', '  criterion:', f"    key: '{key}'", '    kwargs:',
            *(f'      {k}: {v}' for k, v in {**io, **values}.items()), '  weight: 1.0']
