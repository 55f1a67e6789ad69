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
from torchdistill.common.main_util import import_dependencies
from torchdistill.losses.registry import get_high_level_loss
from torchdistill.models.registry import MODEL_DICT

from ..losses import resolve_gamma
from ..runner.errors import UsageError, one_line
from ..runner.recipe import resolve_recipe

__all__ = ['new_recipe']

LOSS_KEYS = {'wttm': 'WTTMLoss', 'ttm': 'TTMLoss', 'kd': 'KDLoss'}
METHODS = {v: k for k, v in LOSS_KEYS.items()}


def _get(node: yaml.Node | None, *keys: str) -> yaml.Node | None:
    for key in keys:
        if not isinstance(node, yaml.MappingNode):
            return None
        node = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)
    return node


def _scalar_edit(text: str, node: yaml.ScalarNode, value: str | None) -> tuple[int, int, str]:
    """Replace a scalar's value, keeping its anchor and tag."""
    span = text[node.start_mark.index:node.end_mark.index]
    prefix = re.match(r'((?:[&!]\S*\s+)*)', span).group(1)
    return node.start_mark.index + len(prefix), node.end_mark.index, 'null' if value is None else repr(str(value))


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


def _base_loss(sub_terms: yaml.Node | None) -> tuple[str | None, dict]:
    """(method, kwargs) of the base recipe's TTM/WTTM/KD term."""
    if isinstance(sub_terms, yaml.MappingNode):
        for _, term in sub_terms.value:
            key = _get(term, 'criterion', 'key')
            if isinstance(key, yaml.ScalarNode) and key.value in METHODS:
                kwargs = yaml.safe_load(yaml.serialize(_get(term, 'criterion', 'kwargs'))) or {}
                return METHODS[key.value], kwargs
    return None, {}


def new_recipe(base: str, teacher: str, student: str, method: str, gamma: float | None = None,
               beta: float | None = None, output: str | None = None, force: bool = False) -> Path:
    """Write a recipe for ``teacher`` -> ``student`` with ``method``, keeping the base's data and schedule."""
    if method not in LOSS_KEYS:
        raise UsageError(f'--method {method!r}: accepted values are {", ".join(LOSS_KEYS)}')
    path = resolve_recipe(base)
    text = path.read_text()
    try:
        root = yaml.compose(text, Loader=yaml.FullLoader)
    except yaml.YAMLError as exc:
        raise UsageError(f'{path}: malformed YAML: {one_line(exc)}') from None
    deps = _get(root, 'dependencies')
    if deps is not None:
        import_dependencies(yaml.safe_load(yaml.serialize(deps)))
    teacher_key, _, weights = teacher.partition(':')
    for flag, key in (('--teacher', teacher_key), ('--student', student)):
        if not _model_exists(key):
            raise UsageError(f'{flag} {key!r}: neither a torchvision classification model nor in torchdistill\'s '
                             'model registry')
    models = _get(root, 'models')
    t_node, s_node = _get(models, 'teacher_model'), _get(models, 'student_model')
    if t_node is None or s_node is None:
        raise UsageError(f'--from {base}: the base recipe needs models.teacher_model and models.student_model')
    sub_terms = _get(root, 'train', 'criterion', 'kwargs', 'sub_terms')
    if not isinstance(sub_terms, yaml.MappingNode):
        raise UsageError(f'--from {base}: the base recipe needs train.criterion.kwargs.sub_terms')
    base_method, base_kwargs = _base_loss(sub_terms)
    if gamma is None:
        gamma = base_kwargs.get('gamma') or (1.0 / base_kwargs['temperature'] if base_kwargs.get('temperature')
                                             else 0.8)
    gamma = resolve_gamma(gamma, None)
    if beta is None and method != 'kd':
        beta = base_kwargs.get('beta', 1.0) if base_method in ('wttm', 'ttm') else 1.0

    edits = [_scalar_edit(text, _get(t_node, 'key'), teacher_key), _scalar_edit(text, _get(s_node, 'key'), student)]
    weights_note = ''
    if teacher_key in torchvision.models.list_models(module=torchvision.models):
        enum, name = _teacher_weights(teacher_key, weights)
        weights_node = _get(t_node, 'kwargs', 'weights')
        if isinstance(weights_node, yaml.SequenceNode):  # !getattr [*weights_class, 'NAME']
            edits.append(_scalar_edit(text, weights_node.value[-1], name))
        elif isinstance(weights_node, yaml.ScalarNode):
            edits.append(_scalar_edit(text, weights_node, name))
        else:
            raise UsageError(f'--from {base}: models.teacher_model.kwargs.weights is missing in the base recipe')
        class_node = _get(t_node, '_weights', 'key')
        if isinstance(class_node, yaml.ScalarNode):
            edits.append(_scalar_edit(text, class_node, f'{enum.__module__}.{enum.__name__}'))
        weights_note = f'{enum.__name__}.{name}'
    else:  # a registry model: WEIGHTS is a checkpoint file
        if not weights or not Path(weights).expanduser().is_file():
            raise UsageError(f'--teacher {teacher}: {teacher_key} is not a torchvision model, so give its weights '
                             'as KEY:CHECKPOINT_FILE (an existing file)')
        src = _get(t_node, 'src_ckpt')
        if not isinstance(src, yaml.ScalarNode):
            raise UsageError(f'--from {base}: models.teacher_model.src_ckpt is missing in the base recipe')
        edits.append(_scalar_edit(text, src, weights))
        weights_node = _get(t_node, 'kwargs', 'weights')
        if weights_node is not None:
            edits.append((weights_node.start_mark.index, weights_node.end_mark.index, 'null'))
        weights_note = weights
    block_start = sub_terms.start_mark.index
    block_end = block_start + len(text[block_start:sub_terms.end_mark.index].rstrip())
    edits.append((block_start, block_end, _loss_block(method, gamma, beta, sub_terms.start_mark.column)))
    dst = _get(s_node, 'dst_ckpt')
    if base_method and base_method != method and dst is not None:
        for item in (dst.value if isinstance(dst, yaml.SequenceNode) else [dst]):
            if isinstance(item, yaml.ScalarNode) and f'/{base_method}/' in item.value:
                edits.append(_scalar_edit(text, item, item.value.replace(f'/{base_method}/', f'/{method}/')))

    body = text
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
    """The new recipe composes, its loss builds, and both models build (without downloading weights)."""
    root = yaml.compose(text, Loader=yaml.FullLoader)
    root.value = [(k, v) for k, v in root.value if k.value != 'datasets']  # data may live on another machine
    loader = yaml.FullLoader('')
    config = loader.construct_document(root)
    try:
        get_high_level_loss(config['train']['criterion'])
        for label, key in (('teacher_model', teacher_key), ('student_model', student)):
            kwargs = dict(config['models'][label].get('kwargs') or {}, weights=None)
            if key in MODEL_DICT:
                kwargs.pop('weights')
                MODEL_DICT[key](**kwargs)
            else:
                torchvision.models.get_model(key, **kwargs)
    except (ValueError, TypeError, KeyError) as exc:
        raise UsageError(f'the new recipe does not build: {type(exc).__name__}: {one_line(exc)}') \
            from None
