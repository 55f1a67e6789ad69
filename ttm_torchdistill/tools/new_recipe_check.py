"""What `new-recipe` measures on the new pair's models and checks before it writes: the kwargs a timm model takes,
the feature sizes the base's feature terms (CRD, ITRD, ReviewKD) need for the new models, and that the recipe builds.

The models are built without downloading anything (torchvision weights None, timm ``pretrained`` False; a timm
teacher's weights file is loaded) and run on one blank input of the recipe's size (32 x 32 for CIFAR datasets, else
what the evaluation transform makes of an image).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch import nn
from torchdistill.losses.registry import get_mid_level_loss
from torchdistill.models.registry import MODEL_DICT

from ..errors import UsageError, one_line
from ..extras import require_timm
from ..models.timm_model import load_weights
from ..recipe import RecipeDocument, RecipeEdits

__all__ = ['TIMM_KEY', 'check_recipe', 'feature_edits', 'timm_kwargs']

TIMM_KEY = 'timm_model'
WRAPPED = 'model.'
"""the prefix of the wrapped model's modules inside an auxiliary model wrapper (CRD's, ITRD's)"""
PROBE_IMAGE = 320
"""the side of the blank image the evaluation transform turns into an input"""
ROLES = {'teacher': 'teacher_model', 'student': 'student_model'}


def timm_kwargs(flag: str, name: str, values: dict) -> dict:
    """The kwargs of ``values`` that timm's model ``name`` takes (the base's ``img_size`` is not a CNN's)."""
    timm = require_timm(f'{flag} {name}')
    taken = dict(values)
    while True:
        try:
            timm.create_model(name, pretrained=False, **{k: v for k, v in taken.items() if v is not None})
            return taken
        except TypeError as exc:
            found = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
            if found is None or found.group(1) not in taken:
                raise UsageError(f'{flag} {name}: the timm model does not build: {one_line(exc)}') from None
            del taken[found.group(1)]


def build_model(doc: RecipeDocument, label: str, weights_file: bool = False) -> nn.Module:
    """models.<label> of ``doc`` without downloading weights; ``weights_file``: a timm teacher's file is loaded."""
    key = doc.value(f'models.{label}.key')
    kwargs = dict(doc.value(f'models.{label}.kwargs') or {})
    if key == TIMM_KEY:
        checkpoint = kwargs.pop('checkpoint', None)
        model = MODEL_DICT[key](**dict(kwargs, pretrained=False))
        if checkpoint and weights_file:
            load_weights(model, checkpoint, f'models.{label}.kwargs.checkpoint')
        return model
    if key in MODEL_DICT:
        kwargs.pop('weights', None)
        return MODEL_DICT[key](**kwargs)
    return torchvision.models.get_model(key, **dict(kwargs, weights=None))


def input_shape(doc: RecipeDocument) -> tuple[int, ...]:
    """(C, H, W) of the recipe's inputs: CIFAR's 32 x 32, else what the test set's transform makes of an image."""
    dataset = doc.value('test.test_data_loader.dataset_id') or doc.value('train.val_data_loader.dataset_id')
    if 'CIFAR' in str(doc.value(f'datasets.{dataset}.key')):
        return 3, 32, 32
    transform = doc.value(f'datasets.{dataset}.init.kwargs.transform')
    if transform is None:
        return 3, 224, 224
    return tuple(transform(Image.new('RGB', (PROBE_IMAGE, PROBE_IMAGE))).shape)


def _in_model(doc: RecipeDocument, role: str, path: str) -> str:
    """A module path of the recipe (``model.avgpool`` inside a wrapper) as a path of the model itself."""
    wrapped = doc.has(f'train.{role}.auxiliary_model_wrapper') and path.startswith(WRAPPED)
    return path[len(WRAPPED):] if wrapped else path


def _feature_reads(doc: RecipeDocument) -> list[tuple[str, str, str, str]]:
    """(key path of a feature size, role, module path in the model, io) of every size a feature term names."""
    reads = []
    for role in ROLES:
        wrapper = f'train.{role}.auxiliary_model_wrapper'
        path = doc.value(f'{wrapper}.kwargs.input_module_path')
        if isinstance(path, str):
            reads += [(key, role, _in_model(doc, role, path), 'output') for key in
                      (f'{wrapper}.kwargs.in_features', f'{wrapper}.kwargs.linear_kwargs.in_features') if doc.has(key)]
    for term in doc.loss_terms():
        if term.key != 'ITRDLoss':
            continue
        for role in ROLES:
            path, io = term.kwargs.get(f'{role}_module_path'), term.kwargs.get(f'{role}_module_io', 'output')
            if isinstance(path, str):
                reads.append((term.param_path(f'{role}_feature_size'), role, _in_model(doc, role, path), io))
        embedding = 'train.student.auxiliary_model_wrapper.kwargs.out_features'  # ITRD's: student -> teacher size
        if doc.value('train.student.auxiliary_model_wrapper.key') == 'Linear4ITRD' and doc.has(embedding):
            path = term.kwargs.get('teacher_module_path')
            reads.append((embedding, 'teacher', _in_model(doc, 'teacher', path),
                          term.kwargs.get('teacher_module_io', 'output')))
    return reads


Shapes = dict[tuple[str, str], tuple[int, ...]]
"""(module path, 'input' | 'output') -> the shape it has on one input (its last call's, as a forward hook keeps it)"""


@torch.no_grad()
def _module_shapes(model: nn.Module, shape: tuple[int, ...]) -> Shapes:
    """The input and output shape of every module of ``model`` on one blank input of ``shape`` (one forward)."""
    found: Shapes = {}

    def keep(path: str) -> object:
        def hook(module: nn.Module, args: tuple, out: object) -> None:
            for io, value in (('input', args[0] if args else None), ('output', out)):
                if isinstance(value, torch.Tensor):
                    found[path, io] = tuple(value.shape)
        return hook

    handles = [module.register_forward_hook(keep(path)) for path, module in model.named_modules() if path]
    try:
        model.eval()(torch.zeros(1, *shape))
    finally:
        for handle in handles:
            handle.remove()
    return found


def _missing(flag: str, name: str, role: str, path: str, key: str) -> UsageError:
    return UsageError(f'{flag} {name}: the base recipe\'s feature terms read the {role}\'s module {path!r} ({key}), '
                      f'which {name} does not have; choose a base without CRD/ITRD/ReviewKD terms (e.g. a wttm '
                      'recipe) or a model with that module')


REVIEW = 'train.student.auxiliary_model_wrapper'
REVIEW_PREFIX = 'student_model.'
"""the prefix of the student's modules inside torchdistill's Student4KnowledgeReview"""


def _review_values(doc: RecipeDocument, shapes: dict[str, Shapes],
                   flags: dict[str, str]) -> list[tuple[str, object, str | None]]:
    """(key path, value, note) of knowledge review's channels and sizes for the new models (one note for all): each
    fusion module's in_channels (its student level's), out_channels (the teacher level an HierarchicalContextLoss term
    compares it with) and the levels' spatial sizes, deepest first."""
    abfs = doc.value(f'{REVIEW}.kwargs.abfs') or []
    teacher_levels = {term.kwargs.get('student_module_path'): (term.kwargs.get('teacher_module_path'),
                                                                term.kwargs.get('teacher_module_io', 'output'))
                      for term in doc.loss_terms() if term.key == 'HierarchicalContextLoss'}
    values, sizes, channels = [], [], []
    for index, abf in enumerate(abfs):
        key = f'{REVIEW}.kwargs.abfs.{index}'
        path = abf['path'][len(REVIEW_PREFIX):] if abf['path'].startswith(REVIEW_PREFIX) else abf['path']
        found = shapes['student'].get((path, abf['io']))
        if found is None:
            raise _missing(flags['student'], _name(doc, 'student'), 'student', path, f'{key}.path')
        values.append((f'{key}.kwargs.in_channels', found[1], None))
        sizes.insert(0, found[2] if len(found) > 2 else 1)
        channels.append(str(found[1]))
        teacher_path, io = teacher_levels.get(f'abf_modules.{len(abfs) - 1 - index}', (None, None))
        if teacher_path is not None:
            target = shapes['teacher'].get((teacher_path, io))
            if target is None:
                raise _missing(flags['teacher'], _name(doc, 'teacher'), 'teacher', teacher_path, 'teacher_module_path')
            values.append((f'{key}.kwargs.out_channels', target[1], None))
            channels[-1] += f' -> {target[1]}'
    if doc.has(f'{REVIEW}.kwargs.sizes'):
        values.append((f'{REVIEW}.kwargs.sizes', sizes, None))
    note = (f'knowledge review\'s fusion channels (student -> teacher level) {", ".join(channels)}, level sizes '
            f'{sizes}')
    return [*values[:-1], (*values[-1][:2], note)] if values else []


def _name(doc: RecipeDocument, role: str) -> str:
    return doc.value(f'models.{ROLES[role]}.kwargs.name') or doc.value(f'models.{ROLES[role]}.key')


def feature_edits(text: str, flags: dict[str, str]) -> tuple[str, list[str]]:
    """``text`` with the feature sizes of its CRD / ITRD / ReviewKD parts set to the new models' (``flags``: role ->
    the command-line flag that chose the model), and one note per value set."""
    doc = RecipeDocument(text, Path('the new recipe'))
    reads = _feature_reads(doc)
    review = doc.value(f'{REVIEW}.key') == 'Student4KnowledgeReview'
    if not reads and not review:
        return text, []
    shape = input_shape(doc)
    shapes = {role: _module_shapes(build_model(doc, label), shape) for role, label in ROLES.items()}
    values = []
    for key, role, path, io in reads:
        found = shapes[role].get((path, io))
        if found is None:
            raise _missing(flags[role], _name(doc, role), role, path, key)
        size = math.prod(found[1:])
        values.append((key, size, f'{key.rsplit(".", 1)[-1]} {size} ({role} {path!r})'))
    if review:
        values += _review_values(doc, shapes, flags)
    edits, notes, done = RecipeEdits(doc), [], set()
    for key, value, note in values:
        node = doc.node(key)
        if id(node) not in done:  # an alias of an anchored size is the same node: set once
            done.add(id(node))
            if doc.value(key) != value:
                edits.set_value(node, str(value))
            if note is not None:
                notes.append(note)
    return edits.text(), notes


@torch.no_grad()
def check_recipe(text: str, base: RecipeDocument) -> None:
    """The new recipe validates as the runner validates it, the loss terms new-recipe wrote or changed and both
    models build (the base's other terms are as the base has them), the models predict the same classes on one
    input, and every module its forward hooks name exists."""
    doc = RecipeDocument(text, Path('the new recipe'))
    doc.validate()
    unchanged = base.loss_terms()
    try:
        for term in doc.loss_terms():
            if term not in unchanged:
                get_mid_level_loss(doc.value(f'{term.path}.criterion'), doc.value(f'{term.path}.criterion_wrapper'))
        models = {role: build_model(doc, label, weights_file=True) for role, label in ROLES.items()}
        shape = input_shape(doc)
        outputs = {role: model.eval()(torch.zeros(2, *shape)) for role, model in models.items()}
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise UsageError(f'the new recipe does not build: {type(exc).__name__}: {one_line(exc)}') from None
    if outputs['teacher'].shape != outputs['student'].shape:
        raise UsageError(f'the new recipe does not build: the teacher outputs {list(outputs["teacher"].shape)} but the '
                         f'student {list(outputs["student"].shape)} on one batch: they must predict the same classes')
    for role, model in models.items():
        hooks = doc.value(f'train.{role}.forward_hook') or {}
        modules = dict(model.named_modules())
        wrapped = doc.has(f'train.{role}.auxiliary_model_wrapper')
        for io in ('input', 'output'):
            for path in hooks.get(io) or ():
                if wrapped and not path.startswith(WRAPPED):
                    continue  # a module of the wrapper itself (CRD's normalizer, ITRD's embed)
                if _in_model(doc, role, path) not in modules:
                    raise UsageError(f'the new recipe does not build: train.{role}.forward_hook.{io} names {path!r}, '
                                     f'which the {role} does not have')
