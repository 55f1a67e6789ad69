"""`ttm-distill new-recipe`: a recipe for another teacher-student pair, written from an existing one.

The base recipe is edited as text at the positions PyYAML reports for its nodes, so torchdistill's
tags, anchors, comments and layout stay as they were; only model keys, teacher weights, the loss
and the checkpoint folder change. The result is checked before it is written.
"""
from __future__ import annotations

import datetime
import re
from pathlib import Path

import torchvision
import yaml
from torchdistill.losses.registry import get_high_level_loss
from torchdistill.models.registry import MODEL_DICT

from ..errors import UsageError, one_line
from ..losses import resolve_gamma
from ..recipe import SUB_TERMS, RecipeDocument, resolve_recipe

__all__ = ['new_recipe']

LOSS_KEYS = {'wttm': 'WTTMLoss', 'ttm': 'TTMLoss', 'kd': 'KDLoss'}
METHODS = {v: k for k, v in LOSS_KEYS.items()}


def _quoted(value: str | None) -> str:
    """A scalar's new text: YAML null, or a quoted string."""
    return 'null' if value is None else repr(str(value))


def _model_exists(key: str) -> bool:
    return key in MODEL_DICT or key in torchvision.models.list_models(module=torchvision.models)


def _teacher_weights(key: str, weights: str):
    """(torchvision weights enum, member name) for a torchvision teacher; refuses names it does not have."""
    enum = torchvision.models.get_model_weights(key)
    names = [*enum.__members__, 'DEFAULT']
    name = weights or 'DEFAULT'
    if name not in names:
        raise UsageError(f'--teacher {key}:{weights}: {weights!r} are not weights of {key} '
                         f'(accepted: {", ".join(names)})')
    return enum, name


def _loss_block(method: str, gamma: float, beta: float | None, indent: int) -> str:
    if method == 'kd':
        params = {'temperature': round(1.0 / gamma, 6), 'alpha': 0.5, 'reduction': "'batchmean'"}
    else:
        params = {'gamma': gamma, 'beta': beta, 'alpha': 1.0, 'reduction': "'batchmean'"}
    io = {'student_module_path': "'.'", 'student_module_io': "'output'",
          'teacher_module_path': "'.'", 'teacher_module_io': "'output'"}
    lines = [f'{method}:', '  criterion:', f"    key: '{LOSS_KEYS[method]}'", '    kwargs:']
    lines += [f'      {k}: {v}' for k, v in {**io, **params}.items()]
    lines += ['  weight: 1.0']
    pad = ' ' * indent
    return ('\n' + pad).join(lines)


def _base_loss(doc: RecipeDocument) -> tuple[str | None, dict]:
    """(method, kwargs) of the base recipe's TTM/WTTM/KD term."""
    term = next((t for t in doc.loss_terms() if t.key in METHODS), None)
    return (METHODS[term.key], term.kwargs) if term else (None, {})


def new_recipe(base: str, teacher: str, student: str, method: str, gamma: float | None = None,
               beta: float | None = None, output: str | None = None, force: bool = False) -> Path:
    """Write a recipe for ``teacher`` -> ``student`` with ``method``, keeping the base's data and schedule."""
    if method not in LOSS_KEYS:
        raise UsageError(f'--method {method!r}: accepted values are {", ".join(LOSS_KEYS)}')
    doc = RecipeDocument.open(resolve_recipe(base))
    doc.import_dependencies()
    teacher_key, _, weights = teacher.partition(':')
    for flag, key in (('--teacher', teacher_key), ('--student', student)):
        if not _model_exists(key):
            raise UsageError(f'{flag} {key!r}: neither a torchvision classification model nor in torchdistill\'s '
                             'model registry')
    if not (doc.has('models.teacher_model') and doc.has('models.student_model')):
        raise UsageError(f'--from {base}: the base recipe needs models.teacher_model and models.student_model')
    if not doc.keys(SUB_TERMS):
        raise UsageError(f'--from {base}: the base recipe needs {SUB_TERMS}')
    base_method, base_kwargs = _base_loss(doc)
    if gamma is None:
        gamma = base_kwargs.get('gamma') or (1.0 / base_kwargs['temperature'] if base_kwargs.get('temperature')
                                             else 0.8)
    gamma = resolve_gamma(gamma, None)
    if beta is None and method != 'kd':
        beta = base_kwargs.get('beta', 1.0) if base_method in ('wttm', 'ttm') else 1.0

    edits = [(*doc.scalar_span('models.teacher_model.key'), _quoted(teacher_key)),
             (*doc.scalar_span('models.student_model.key'), _quoted(student))]
    weights_note = ''
    if teacher_key in torchvision.models.list_models(module=torchvision.models):
        enum, name = _teacher_weights(teacher_key, weights)
        weights_node = doc.node('models.teacher_model.kwargs.weights')
        if isinstance(weights_node, yaml.SequenceNode):  # !getattr [*weights_class, 'NAME']
            edits.append((*doc.scalar_span('models.teacher_model.kwargs.weights.-1'), _quoted(name)))
        elif isinstance(weights_node, yaml.ScalarNode):
            edits.append((*doc.scalar_span(weights_node), _quoted(name)))
        else:
            raise UsageError(f'--from {base}: models.teacher_model.kwargs.weights is missing in the base recipe')
        if isinstance(doc.node('models.teacher_model._weights.key'), yaml.ScalarNode):
            edits.append((*doc.scalar_span('models.teacher_model._weights.key'),
                          _quoted(f'{enum.__module__}.{enum.__name__}')))
        weights_note = f'{enum.__name__}.{name}'
    else:  # a registry model: WEIGHTS is a checkpoint file
        if not weights or not Path(weights).expanduser().is_file():
            raise UsageError(f'--teacher {teacher}: {teacher_key} is not a torchvision model, so give its weights '
                             'as KEY:CHECKPOINT_FILE (an existing file)')
        if not isinstance(doc.node('models.teacher_model.src_ckpt'), yaml.ScalarNode):
            raise UsageError(f'--from {base}: models.teacher_model.src_ckpt is missing in the base recipe')
        edits.append((*doc.scalar_span('models.teacher_model.src_ckpt'), _quoted(weights)))
        weights_node = doc.node('models.teacher_model.kwargs.weights')
        if weights_node is not None:
            edits.append((weights_node.start_mark.index, weights_node.end_mark.index, 'null'))
        weights_note = weights
    block_start, block_end, column = doc.block_span(SUB_TERMS)
    edits.append((block_start, block_end, _loss_block(method, gamma, beta, column)))
    dst = doc.node('models.student_model.dst_ckpt')
    if base_method and base_method != method and dst is not None:
        for item in (dst.value if isinstance(dst, yaml.SequenceNode) else [dst]):
            if isinstance(item, yaml.ScalarNode) and f'/{base_method}/' in item.value:
                edits.append((*doc.scalar_span(item), _quoted(item.value.replace(f'/{base_method}/', f'/{method}/'))))

    body = doc.text
    for start, end, new in sorted(edits, reverse=True):
        body = body[:start] + new + body[end:]
    body = re.sub(r'\A(?:#.*\n|\s*\n)*', '', body)  # the base header describes the base pair
    hp = f'temperature {1 / gamma:g}, alpha 0.5' if method == 'kd' else f'gamma {gamma:g}, beta {beta:g}, alpha 1'
    header = (f'# {method.upper()}: {student} from {teacher_key} ({weights_note}).\n'
              f'# Written by `ttm-distill new-recipe` on {datetime.date.today()} from {base}: same data, schedule,\n'
              f'# optimizer and transforms; {LOSS_KEYS[method]} with {hp}.\n'
              '# These hyperparameters are an untuned starting point (see `ttm-distill calibrate`).\n'
              '#\n# Recipes are code: torchdistill\'s YAML tags import and call Python while the file loads.\n\n')
    new_text = header + body
    _check(new_text, teacher_key, student)
    out = Path(output) if output else Path(f'{student}_from_{teacher_key}.{method}.yaml')
    if out.exists() and not force:
        raise UsageError(f'{out} exists: choose another -o PATH or pass --force to overwrite it')
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(new_text)
    return out


def _check(text: str, teacher_key: str, student: str) -> None:
    """The new recipe composes, its loss builds, and both models build (without downloading weights or building
    the datasets: data may live on another machine)."""
    doc = RecipeDocument(text, Path('the new recipe'))
    try:
        get_high_level_loss(doc.value('train.criterion'))
        for label, key in (('teacher_model', teacher_key), ('student_model', student)):
            kwargs = dict(doc.value(f'models.{label}.kwargs') or {}, weights=None)
            if key in MODEL_DICT:
                kwargs.pop('weights')
                MODEL_DICT[key](**kwargs)
            else:
                torchvision.models.get_model(key, **kwargs)
    except (ValueError, TypeError, KeyError) as exc:
        raise UsageError(f'the new recipe does not build: {type(exc).__name__}: {one_line(exc)}') \
            from None
