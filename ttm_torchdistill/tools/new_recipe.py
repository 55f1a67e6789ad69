"""`ttm-distill new-recipe`: a recipe for another teacher-student pair, written from an existing one.

The base recipe is edited as text (:class:`ttm_torchdistill.recipe.RecipeEdits`), so torchdistill's tags, anchors,
comments and layout stay as they were; the model keys, teacher weights, the logit loss term, feature sizes and the
checkpoint folder change. Teacher and student may be torchvision models, keys of torchdistill's model registry or timm
models (``timm/NAME`` picks timm where torchvision has the same name). A timm model becomes ``key: 'timm_model'`` with
``kwargs.name``; its teacher loads timm's pretrained weights (``NAME``) or a local file (``NAME:FILE``), its student
starts from scratch; the base's other kwargs are kept where the new model takes them. The anchor that names the
experiment moves with the model's name, so checkpoint paths name the new pair.

The base's logit term (TTM/WTTM/KD/DIST/DKD, else its cross-entropy term) becomes the method's; DIST and DKD get a
cross-entropy term of their own beside it, which the other methods (that hold the cross entropy) drop. Other terms
(CRD, ITRD) stay, with the feature sizes of their embeddings and losses set to the new models'
(:mod:`.new_recipe_check` measures them). The
result is checked before it is written: what new-recipe writes passes `train --check` where the data and weights are.
"""
from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from pathlib import Path

import torchvision
from torchdistill.datasets.registry import COLLATE_FUNC_DICT
from torchdistill.models.registry import MODEL_DICT

from ..data import MixupCutmixCollate
from ..errors import UsageError
from ..extras import MissingExtra, require_timm
from ..methods import (
    CROSS_ENTROPY_ENTRY,
    BaseTerm,
    Method,
    feature_methods,
    logit_methods,
    method_by_loss,
    method_named,
)
from ..outputs import check_output_file, write_text
from ..recipe import (
    SUB_TERMS,
    LossTerm,
    RecipeDocument,
    RecipeEdits,
    RecipeView,
    quoted,
    recipe_name,
    resolve_recipe,
)
from .new_recipe_check import TIMM_KEY, check_recipe, feature_edits, timm_kwargs
from .new_recipe_feature import base_feature_term, check_kept_method, feature_method_edits, kept_methods, plain_roles

__all__ = ['new_recipe']

CROSS_ENTROPY = 'CrossEntropyLoss'
"""a base without a TTM/WTTM/KD term (CRD or ITRD alone) has its cross-entropy term replaced: the method's loss
holds the cross entropy"""
TRAIN_COLLATE = 'train.train_data_loader.collate_fn'
FEATURE_SUFFIXES = ('_crd', '_itrd')
"""method folder suffixes of the feature terms a new recipe keeps (``wttm_crd/``, ``wttm_itrd/``)"""
TIMM_PREFIX = 'timm/'
TIMM_ONLY = ('name', 'pretrained', 'checkpoint', 'weights')
"""kwargs a timm model's block gets anew (and that a non-timm model's block loses)"""


@dataclass(frozen=True)
class Model:
    """A model asked for on the command line."""

    flag: str
    """--teacher or --student"""
    kind: str
    """torchvision, registry or timm"""
    key: str
    """its name (without ``timm/``)"""
    weights: str = ''
    """a teacher's weights: a torchvision weights name, or a file"""

    @property
    def teacher(self) -> bool:
        return self.flag == '--teacher'


def _timm_model(name: str) -> bool:
    try:
        return require_timm('a timm model').is_model(name)
    except MissingExtra:
        return False


def _timm_missing(flag: str, name: str) -> UsageError:
    """One line for a name timm was asked for (``timm/NAME``) and does not have."""
    try:
        timm = require_timm('new-recipe')
    except MissingExtra:
        return UsageError(f"{flag} timm/{name}: timm is not installed (pip install 'ttm-torchdistill[timm]')")
    import difflib

    close = difflib.get_close_matches(name, timm.list_models(), n=3)
    hint = f'; did you mean {", ".join(close)}?' if close else ' (see timm.list_models())'
    return UsageError(f'{flag} timm/{name}: {name!r} is not a timm model{hint}')


def _model(flag: str, spec: str, weights: str = '') -> Model:
    """The model a --teacher/--student names; one line for a name nobody has."""
    if spec.startswith(TIMM_PREFIX):
        name = spec[len(TIMM_PREFIX):]
        if not _timm_model(name):
            raise _timm_missing(flag, name)
        return Model(flag, 'timm', name, weights)
    if spec in torchvision.models.list_models(module=torchvision.models):
        return Model(flag, 'torchvision', spec, weights)
    if spec in MODEL_DICT and spec != TIMM_KEY:
        return Model(flag, 'registry', spec, weights)
    if _timm_model(spec):
        return Model(flag, 'timm', spec, weights)
    try:
        require_timm('new-recipe')
        timm_note = 'nor a timm model'
    except MissingExtra:
        timm_note = "nor a timm model (timm is not installed: pip install 'ttm-torchdistill[timm]')"
    raise UsageError(f"{flag} {spec!r}: neither a torchvision classification model nor in torchdistill's model "
                     f'registry, {timm_note}')


def _teacher_weights(model: Model):
    """(torchvision weights enum, member name) of a torchvision teacher; refuses names it does not have."""
    enum = torchvision.models.get_model_weights(model.key)
    names = [*enum.__members__, 'DEFAULT']
    name = model.weights or 'DEFAULT'
    if name not in names:
        raise UsageError(f'--teacher {model.key}:{model.weights}: {model.weights!r} are not weights of {model.key} '
                         f'(accepted: {", ".join(names)})')
    return enum, name


@dataclass(frozen=True)
class LossChoice:
    """The method's loss term: its parameters, and how the header describes them."""

    method: Method
    params: dict[str, object]

    def lines(self) -> list[str]:
        """The term as the lines of a ``sub_terms`` entry."""
        return self.method.lines(self.params)

    def summary(self) -> str:
        return ', '.join(f'{k} {v:g}' for k, v in self.params.items() if not isinstance(v, str))


def _feature_choice(method: Method, beta: float | None) -> LossChoice:
    """A feature method's term: its weight (--beta, else the method's default: the CRD benchmark's)."""
    return LossChoice(method, {'weight': beta if beta is not None else method.default_weight})


def _method(name: str, gamma: float | None, beta: float | None) -> Method:
    """The logit method ``name`` (a recipe's dependency may register more), its --gamma and --beta checked by what
    they mean for it."""
    method = method_named(name)
    if method is None:
        accepted = [m.name for m in logit_methods() + feature_methods() + kept_methods()]
        raise UsageError(f'--method {name!r}: accepted values are {", ".join(accepted)}')
    for flag, value, knob in (('--gamma', gamma, method.gamma), ('--beta', beta, method.beta)):
        if value is None:
            continue
        if knob is None:
            raise UsageError(f'{flag}: --method {name} has no parameter it sets')
        problem = knob.check(flag, value, name)
        if problem is not None:
            raise UsageError(f'{flag} {value:g}: {problem}')
    return method


def _check_targets(doc: RecipeDocument, method: Method) -> None:
    """Refuse a method whose loss needs one class index per sample (DKD) from a base whose training collate gives
    soft targets (the DeiT recipes' Mixup/CutMix)."""
    if method.loss_class is None or not method.loss_class.needs_class_indices or not doc.has(TRAIN_COLLATE):
        return
    collate = COLLATE_FUNC_DICT.get(doc.value(TRAIN_COLLATE))
    if isinstance(collate, MixupCutmixCollate):
        raise UsageError(f'--method {method.name}: {method.loss_key} needs one class index per sample, but the base '
                         f'recipe\'s {TRAIN_COLLATE} ({collate.key}) gives soft targets (Mixup/CutMix); choose a '
                         'base without it, or another method')


def _loss_edits(doc: RecipeDocument, edits: RecipeEdits, replaced: LossTerm, choice: LossChoice) -> None:
    """Replace the base's term by the method's; DIST and DKD keep (or get) a cross-entropy term beside it, the
    methods that hold the cross entropy lose the base's own."""
    ce = next((t for t in doc.loss_terms() if t.key == CROSS_ENTROPY), None)
    if not choice.method.separate_ce:
        edits.set_entry(SUB_TERMS, replaced.name, choice.lines())
        if ce is not None and ce is not replaced and ce.name != replaced.name:
            edits.drop_entry(SUB_TERMS, ce.name)
    elif replaced.key == CROSS_ENTROPY:
        edits.add_entry_after(SUB_TERMS, replaced.name, choice.lines())
    else:
        edits.set_entry(SUB_TERMS, replaced.name, (CROSS_ENTROPY_ENTRY if ce is None else []) + choice.lines())


def _registry_teacher(doc: RecipeDocument, edits: RecipeEdits, model: Model) -> str:
    """A registry teacher's checkpoint file becomes src_ckpt (replacing a ``!join`` of path parts, tag and all)."""
    if not model.weights or not Path(model.weights).expanduser().is_file():
        raise UsageError(f'--teacher {model.key}:{model.weights}: {model.key} is not a torchvision model, so give its '
                         'weights as KEY:CHECKPOINT_FILE (an existing file)')
    if not doc.has('models.teacher_model.src_ckpt'):
        raise UsageError(f'--from {doc.source}: models.teacher_model.src_ckpt is missing in the base recipe')
    edits.set_value('models.teacher_model.src_ckpt', quoted(model.weights), keep_tag=False)
    return model.weights


def _torchvision_teacher(doc: RecipeDocument, edits: RecipeEdits, model: Model) -> str:
    """A torchvision teacher's weights in a torchvision base (its !getattr node and weights class)."""
    enum, name = _teacher_weights(model)
    if not edits.set_item('models.teacher_model.kwargs.weights', quoted(name)):  # !getattr [*weights_class, 'NAME']
        raise UsageError(f'--from {doc.source}: models.teacher_model.kwargs.weights is missing in the base recipe')
    if doc.has('models.teacher_model._weights.key'):
        edits.set_value('models.teacher_model._weights.key', quoted(f'{enum.__module__}.{enum.__name__}'))
    return f'{enum.__name__}.{name}'


def _rewritten_model(doc: RecipeDocument, edits: RecipeEdits, role: str, model: Model, base_timm: bool,
                     dropped: list[str]) -> str:
    """Rewrite models.<role>'s key and kwargs block for a model of another family (timm <-> the others, or timm ->
    timm); returns the weights note. The experiment-naming anchor moves with the model's name; base kwargs the new
    timm model does not take are left out (named in ``dropped``)."""
    models = f'models.{role}'
    key = f'{models}.key'
    anchor = edits.anchor(f'{models}.kwargs.name' if base_timm else key)
    entries = edits.entries(f'{models}.kwargs')
    note, first = 'from scratch', []
    if model.kind == 'timm':
        candidates = [key for key, _, _ in entries if key not in TIMM_ONLY]
        taken = timm_kwargs(model.flag, model.key, {key: doc.value(f'{models}.kwargs.{key}') for key in candidates})
        dropped += [f'{key} (models.{role}: {model.key} does not take it)' for key in candidates if key not in taken]
        keep = [text for key, text, _ in entries if key in taken]
        if model.teacher and model.weights and not Path(model.weights).expanduser().is_file():
            raise UsageError(f'--teacher {model.key}:{model.weights}: {model.weights!r} is not a file (give NAME for '
                             "timm's pretrained weights, or NAME:WEIGHTS_FILE)")
        first = [f'name: {anchor}{quoted(model.key)}', f'pretrained: {bool(model.teacher and not model.weights)}']
        if model.teacher:
            first.append(f'checkpoint: {quoted(model.weights or None)}')
            note = model.weights or "timm's pretrained weights"
    else:
        keep = [text for key, text, _ in entries if key == 'num_classes']
        if model.kind == 'torchvision' and model.teacher:
            enum, member = _teacher_weights(model)
            first, note = [f'weights: {quoted(f"{enum.__name__}.{member}")}'], f'{enum.__name__}.{member}'
        elif model.teacher:
            note = _registry_teacher(doc, edits, model)
    if model.teacher and model.kind != 'registry' and doc.value(f'{models}.src_ckpt') is not None:
        edits.set_value(f'{models}.src_ckpt', 'null', keep_tag=False)  # the weights come from kwargs now (a !join too)
    if model.kind == 'timm' and not base_timm:  # torchvision/registry -> timm: the key's anchor moves to the name
        edits.set_node(key, quoted(TIMM_KEY))
    else:
        edits.set_node(key, (anchor if model.kind != 'timm' else '') + quoted(
            model.key if model.kind != 'timm' else TIMM_KEY))
    edits.set_block(f'{models}.kwargs', first + keep)
    if model.kind != 'torchvision' and doc.has(f'{models}._weights'):
        edits.drop_entry(models, '_weights')  # the torchvision weights class is no longer used
    return note


def _model_edits(doc: RecipeDocument, edits: RecipeEdits, teacher: Model, student: Model,
                 dropped: list[str]) -> str:
    """Edits of both models; returns the teacher's weights note."""
    note = ''
    for role, model in (('teacher_model', teacher), ('student_model', student)):
        base_timm = doc.value(f'models.{role}.key') == TIMM_KEY
        if model.kind == 'timm' or base_timm:
            role_note = _rewritten_model(doc, edits, role, model, base_timm, dropped)
            note = role_note if model.teacher else note
            continue
        edits.set_value(f'models.{role}.key', quoted(model.key))
        if model.teacher and model.kind == 'torchvision':
            note = _torchvision_teacher(doc, edits, model)
        elif model.teacher:  # a registry model: its weights are a checkpoint file
            note = _registry_teacher(doc, edits, model)
            if doc.has('models.teacher_model.kwargs.weights'):
                edits.set_node('models.teacher_model.kwargs.weights', 'null')
    return note


def _header(choice: LossChoice, teacher: Model, student: Model, note: str, base: str, dropped: list[str],
            features: list[str]) -> str:
    ce = ' beside cross entropy (weight 1)' if choice.method.separate_ce else ''
    lines = [f'# {choice.method.name.upper()}: {student.key} from {teacher.key} ({note}).',
             f'# Written by `ttm-distill new-recipe` on {datetime.date.today()} from {base}: same data, schedule,',
             f'# optimizer and transforms; {choice.method.loss_key} with {choice.summary()}{ce}.' if choice.params else
             f'# optimizer, transforms and {choice.method.loss_key} terms, sized for this pair.',
             ("# The weight is the CRD benchmark's for its CIFAR-100 pairs, untuned for this one."
              if choice.method.recipe else
              '# These hyperparameters are an untuned starting point (see `ttm-distill calibrate`).'),
             '# No `paper:` block: the paper reports no number for this pair.']
    lines += [f'# Feature sizes set for this pair: {", ".join(features)}.'] if features else []
    lines += [f'# Left out of the base\'s model kwargs: {", ".join(dropped)}.'] if dropped else []
    lines += ['#', "# Recipes are code: torchdistill's YAML tags import and call Python while the file loads.", '', '']
    return '\n'.join(lines)


def new_recipe(base: str, teacher: str, student: str, method: str, gamma: float | None = None,
               beta: float | None = None, output: str | None = None, force: bool = False) -> Path:
    """Write a recipe for ``teacher`` -> ``student`` with ``method``, keeping the base's data and schedule."""
    doc = RecipeDocument.open(resolve_recipe(base))
    doc.import_dependencies()  # a plugin's methods too
    chosen = _method(method, gamma, beta)
    teacher_spec, _, weights = teacher.partition(':')
    teacher_model, student_model = _model('--teacher', teacher_spec, weights), _model('--student', student)
    if not (doc.has('models.teacher_model') and doc.has('models.student_model')):
        raise UsageError(f'--from {base}: the base recipe needs models.teacher_model and models.student_model')
    view = RecipeView(doc)
    feature_term = base_feature_term(doc)  # a FitNet/AT/... base: a logit method's term takes its place
    replaced = view.method_term() or feature_term or next(iter(view.loss_terms((CROSS_ENTROPY,))), None)
    if replaced is None:
        raise UsageError(f'--from {base}: the base recipe needs a TTM/WTTM/KD/DIST/DKD or cross-entropy term under '
                         f'{SUB_TERMS} for the method\'s loss to replace')
    base_method = method_by_loss(replaced.key)
    out = Path(output) if output else Path(f'{student_model.key}_from_{teacher_model.key}.{method}.yaml')
    check_output_file(out, '-o', replace=True)  # a writable place, not a folder; checked before any work
    if out.exists() and not force:
        raise UsageError(f'{out} exists: choose another -o PATH or pass --force to overwrite it')
    base_term = BaseTerm(base_method, replaced.kwargs if base_method else {},
                         str(view.dataset_id('train')).startswith('cifar'))
    kept = not chosen.logit and chosen.recipe is None  # CRD, ITRD, ReviewKD: the base's own terms, resized
    if kept:
        check_kept_method(doc, chosen)
    elif beta is None and not chosen.beta_carries and not base_term.same(chosen):
        uses = base_method.name if base_method else 'no TTM/WTTM/KD/DIST/DKD term'
        raise UsageError(f'--method {method}: the base recipe uses {uses}, whose beta does not carry over '
                         f'({method.upper()}\'s beta has another scale: it is tuned per method and pair); give --beta')
    _check_targets(doc, chosen)
    feature = chosen.recipe is not None
    choice = (_feature_choice(chosen, beta) if feature else LossChoice(chosen, {}) if kept
              else LossChoice(chosen, chosen.recipe_kwargs(chosen, gamma, beta, base_term)))

    edits, dropped = RecipeEdits(doc), []
    note = _model_edits(doc, edits, teacher_model, student_model, dropped)
    edits.drop_top_entry('paper')  # the base pair's reported number is not the new pair's
    if feature:
        feature_method_edits(doc, edits, chosen, choice.params['weight'], teacher_model.key, student_model.key,
                             base_term.cifar)
    elif not kept:
        if feature_term is not None:
            plain_roles(doc, edits)
        _loss_edits(doc, edits, replaced, choice)
    _method_folder(doc, edits, base, base_method.name if base_method else None, method, feature or kept)
    text = re.sub(r'\A(?:#.*\n|\s*\n)*', '', edits.text())  # the base header describes the base pair
    text, features = feature_edits(text, {'teacher': teacher_model.flag, 'student': student_model.flag})
    new_text = _header(choice, teacher_model, student_model, note, base, dropped, features) + text
    check_recipe(new_text, doc)
    if out.exists() and not force:  # again: it may have appeared while the recipe was checked
        raise UsageError(f'{out} exists: choose another -o PATH or pass --force to overwrite it')
    write_text(out, new_text)
    return out


def _method_folder(doc: RecipeDocument, edits: RecipeEdits, base: str, base_method: str | None, method: str,
                   alone: bool = False) -> None:
    """The checkpoint folder names the new recipe's method: the base's ``wttm_itrd/`` becomes ``ttm_itrd/`` for TTM,
    a ``crd/`` base's (CE + CRD) becomes ``wttm_crd/`` for WTTM; ``alone`` (a feature method, whose recipe keeps no
    other term): the base's method folder becomes the method's."""
    family = recipe_name(resolve_recipe(base)).split('/')
    family = family[1] if len(family) == 3 else None  # a shipped recipe's method folder

    def renamed(part: str) -> str:
        if alone and part in (base_method, family):
            return method
        if base_method and (part == base_method or part.startswith(f'{base_method}_')):
            suffix = part[len(base_method):]  # a feature term the new recipe keeps (_crd, _itrd), else none
            return method + (suffix if suffix in FEATURE_SUFFIXES else '')
        return f'{method}_{part}' if not base_method and family and part == family else part

    edits.rewrite_scalars('models.student_model.dst_ckpt', lambda text: '/'.join(map(renamed, text.split('/'))))
