"""`ttm-distill new-recipe`: a recipe for another teacher-student pair, written from an existing one.

The base recipe is edited as text at the positions PyYAML reports for its nodes, so torchdistill's
tags, anchors, comments and layout stay as they were; only model keys, teacher weights, the loss
and the checkpoint folder change. The result is checked before it is written.

Teacher and student may be torchvision models, keys of torchdistill's model registry or timm models (the
``timm`` extra; ``timm/NAME`` picks timm where torchvision has the same name). A timm model becomes
``key: 'timm_model'`` with ``kwargs.name``; its teacher loads timm's pretrained weights (``NAME``) or a local
file (``NAME:FILE``), its student starts from scratch. Where a model changes between timm and the others, its
``kwargs`` block is rewritten (``num_classes`` and, between timm models, the other kwargs are kept) and the
anchor that names the experiment moves with the model's name, so checkpoint paths name the new pair.
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
from ..extras import MissingExtra, require_timm
from ..losses import resolve_gamma
from ..models.timm_model import load_weights
from ..outputs import check_output_file, write_text
from ..recipe import SUB_TERMS, RecipeDocument, resolve_recipe

__all__ = ['new_recipe']

LOSS_KEYS = {'wttm': 'WTTMLoss', 'ttm': 'TTMLoss', 'kd': 'KDLoss'}
METHODS = {v: k for k, v in LOSS_KEYS.items()}


def _quoted(value: str | None) -> str:
    """A scalar's new text: YAML null, or a quoted string."""
    return 'null' if value is None else repr(str(value))


TIMM_PREFIX = 'timm/'
TIMM_KEY = 'timm_model'
TIMM_ONLY = ('name', 'pretrained', 'checkpoint', 'weights')
"""kwargs a timm model's block gets anew (and that a non-timm model's block loses)"""


def _torchvision_models() -> list[str]:
    return torchvision.models.list_models(module=torchvision.models)


def _timm_model(name: str) -> bool:
    try:
        return require_timm('a timm model').is_model(name)
    except MissingExtra:
        return False


def _kind(flag: str, name: str) -> tuple[str, str]:
    """('torchvision' | 'registry' | 'timm', the name without ``timm/``); one line for a name none of them has."""
    if name.startswith(TIMM_PREFIX):
        name = name[len(TIMM_PREFIX):]
        if _timm_model(name):
            return 'timm', name
    elif name in _torchvision_models():
        return 'torchvision', name
    elif name in MODEL_DICT and name != TIMM_KEY:
        return 'registry', name
    elif _timm_model(name):
        return 'timm', name
    try:
        require_timm('new-recipe')
        timm_note = 'nor a timm model'
    except MissingExtra:
        timm_note = "nor a timm model (timm is not installed: pip install 'ttm-torchdistill[timm]')"
    raise UsageError(f"{flag} {name!r}: neither a torchvision classification model nor in torchdistill's model "
                     f'registry, {timm_note}')


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


def _anchor(doc: RecipeDocument, node: yaml.Node) -> str:
    """A scalar's anchor as written (``'&name '``), or ''."""
    found = re.match(r'&(\S+)\s+', doc.text[node.start_mark.index:node.end_mark.index])
    return f'&{found.group(1)} ' if found else ''


def _entries(doc: RecipeDocument, keys: str) -> list[tuple[str, str, int]]:
    """(key, text as written, start) of each entry of the block mapping at ``keys``; an entry runs to the next
    key (or the block's end), so aliases, tags and multi-line values are kept whole."""
    node = doc.node(keys)
    if not isinstance(node, yaml.MappingNode) or node.flow_style or not node.value:
        raise UsageError(f'{keys} of the base recipe must be a block mapping (one key per line) for new-recipe')
    end = doc.block_span(keys)[1]
    starts = [k.start_mark.index for k, _ in node.value] + [end]
    return [(k.value, doc.text[a:b].rstrip(), a)
            for (k, _), a, b in zip(node.value, starts[:-1], starts[1:], strict=True)]


def _drop_entry(doc: RecipeDocument, parent: str, name: str) -> list[tuple[int, int, str]]:
    """The edit that removes entry ``name`` (its whole lines) of the mapping at ``parent``, if it has one."""
    entries = _entries(doc, parent)
    index = next((i for i, (key, _, _) in enumerate(entries) if key == name), None)
    if index is None or index + 1 == len(entries):
        return []
    start = doc.text.rfind('\n', 0, entries[index][2]) + 1
    end = doc.text.rfind('\n', 0, entries[index + 1][2]) + 1
    return [(start, end, '')]


def _registry_teacher(doc: RecipeDocument, teacher: str, key: str, weights: str) -> list[tuple[int, int, str]]:
    """A registry teacher's checkpoint file goes to src_ckpt."""
    if not weights or not Path(weights).expanduser().is_file():
        raise UsageError(f'--teacher {teacher}: {key} is not a torchvision model, so give its weights '
                         'as KEY:CHECKPOINT_FILE (an existing file)')
    if not doc.has('models.teacher_model.src_ckpt'):
        raise UsageError(f'--from {doc.source}: models.teacher_model.src_ckpt is missing in the base recipe')
    return [(*doc.scalar_span('models.teacher_model.src_ckpt'), _quoted(weights))]  # a path or a !join of parts


def _torchvision_teacher_edits(doc: RecipeDocument, key: str, weights: str) -> tuple[list, str]:
    """Edits of a torchvision teacher's weights in a torchvision base (its !getattr node and weights class)."""
    enum, name = _teacher_weights(key, weights)
    edits = []
    weights_node = doc.node('models.teacher_model.kwargs.weights')
    if isinstance(weights_node, yaml.SequenceNode):  # !getattr [*weights_class, 'NAME']
        edits.append((*doc.scalar_span('models.teacher_model.kwargs.weights.-1'), _quoted(name)))
    elif isinstance(weights_node, yaml.ScalarNode):
        edits.append((*doc.scalar_span(weights_node), _quoted(name)))
    else:
        raise UsageError(f'--from {doc.source}: models.teacher_model.kwargs.weights is missing in the base recipe')
    if isinstance(doc.node('models.teacher_model._weights.key'), yaml.ScalarNode):
        edits.append((*doc.scalar_span('models.teacher_model._weights.key'),
                      _quoted(f'{enum.__module__}.{enum.__name__}')))
    return edits, f'{enum.__name__}.{name}'


def _rewritten_model(doc: RecipeDocument, role: str, kind: str, name: str, spec: str, weights: str,
                     base_timm: bool) -> tuple[list, str]:
    """Edits that rewrite models.<role>'s key and kwargs block for a model of another family (timm <-> the
    others, or timm -> timm), and the weights note. The experiment-naming anchor moves with the model's name."""
    models = f'models.{role}'
    key_node, teacher = doc.node(f'{models}.key'), role == 'teacher_model'
    anchor = _anchor(doc, doc.node(f'{models}.kwargs.name') if base_timm else key_node)
    entries = _entries(doc, f'{models}.kwargs')
    keep = [text for key, text, _ in entries if (key not in TIMM_ONLY if kind == 'timm' else key == 'num_classes')]
    note, edits, first = 'from scratch', [], []
    if kind == 'timm':
        if teacher and weights and not Path(weights).expanduser().is_file():
            raise UsageError(f'--teacher {spec}: {weights!r} is not a file (give NAME for timm\'s pretrained '
                             'weights, or NAME:WEIGHTS_FILE)')
        first = [f'name: {anchor}{_quoted(name)}', f'pretrained: {bool(teacher and not weights)}']
        if teacher:
            first.append(f'checkpoint: {_quoted(weights or None)}')
            note = weights or "timm's pretrained weights"
    elif kind == 'torchvision' and teacher:
        enum, member = _teacher_weights(name, weights)
        first, note = [f'weights: {_quoted(f"{enum.__name__}.{member}")}'], f'{enum.__name__}.{member}'
    elif teacher:  # a registry teacher
        edits, note = _registry_teacher(doc, spec, name, weights), weights
    if teacher and kind != 'registry' and isinstance(src := doc.node(f'{models}.src_ckpt'), yaml.ScalarNode) \
            and src.value not in ('', 'null', '~'):
        edits.append((*doc.scalar_span(src), 'null'))  # weights come from kwargs now
    if kind != 'timm' or base_timm:
        new_key = _quoted(name) if kind != 'timm' else _quoted(TIMM_KEY)
        edits.append((key_node.start_mark.index, key_node.end_mark.index, (anchor if kind != 'timm' else '') + new_key))
    else:  # torchvision/registry -> timm: the key's anchor moves to the name
        edits.append((key_node.start_mark.index, key_node.end_mark.index, _quoted(TIMM_KEY)))
    start, end, column = doc.block_span(f'{models}.kwargs')
    edits.append((start, end, ('\n' + ' ' * column).join(first + keep)))
    if kind != 'torchvision' and doc.has(f'{models}._weights'):
        edits += _drop_entry(doc, models, '_weights')  # the torchvision weights class is no longer used
    return edits, note


def new_recipe(base: str, teacher: str, student: str, method: str, gamma: float | None = None,
               beta: float | None = None, output: str | None = None, force: bool = False) -> Path:
    """Write a recipe for ``teacher`` -> ``student`` with ``method``, keeping the base's data and schedule."""
    if method not in LOSS_KEYS:
        raise UsageError(f'--method {method!r}: accepted values are {", ".join(LOSS_KEYS)}')
    doc = RecipeDocument.open(resolve_recipe(base))
    doc.import_dependencies()
    teacher_spec, _, weights = teacher.partition(':')
    teacher_kind, teacher_key = _kind('--teacher', teacher_spec)
    student_kind, student_key = _kind('--student', student)
    if not (doc.has('models.teacher_model') and doc.has('models.student_model')):
        raise UsageError(f'--from {base}: the base recipe needs models.teacher_model and models.student_model')
    if not doc.keys(SUB_TERMS):
        raise UsageError(f'--from {base}: the base recipe needs {SUB_TERMS}')
    base_method, base_kwargs = _base_loss(doc)
    out = Path(output) if output else Path(f'{student_key}_from_{teacher_key}.{method}.yaml')
    check_output_file(out, '-o', replace=True)  # a writable place, not a folder; checked before any work
    if out.exists() and not force:
        raise UsageError(f'{out} exists: choose another -o PATH or pass --force to overwrite it')
    if beta is None and method != 'kd' and base_method != method:
        raise UsageError(f'--method {method}: the base recipe uses {base_method or "no TTM/WTTM/KD term"}, whose beta '
                         f'does not carry over ({method.upper()}\'s beta has another scale: the paper tunes it per '
                         'method and pair); give --beta')
    if gamma is None:
        gamma = base_kwargs.get('gamma') or (1.0 / base_kwargs['temperature'] if base_kwargs.get('temperature')
                                             else 0.8)
    gamma = resolve_gamma(gamma, None)
    if beta is None and method != 'kd':
        beta = base_kwargs.get('beta', 1.0) if base_method in ('wttm', 'ttm') else 1.0

    edits = []
    weights_note = ''
    for role, kind, key, spec in (('teacher_model', teacher_kind, teacher_key, teacher),
                                  ('student_model', student_kind, student_key, student)):
        base_timm = doc.value(f'models.{role}.key') == TIMM_KEY
        if kind == 'timm' or base_timm:
            role_edits, note = _rewritten_model(doc, role, kind, key, spec, weights if role == 'teacher_model'
                                                else '', base_timm)
            edits += role_edits
            weights_note = note if role == 'teacher_model' else weights_note
        elif role == 'student_model':
            edits.append((*doc.scalar_span('models.student_model.key'), _quoted(key)))
        else:
            edits.append((*doc.scalar_span('models.teacher_model.key'), _quoted(key)))
            if kind == 'torchvision':
                role_edits, weights_note = _torchvision_teacher_edits(doc, key, weights)
                edits += role_edits
            else:  # a registry model: WEIGHTS is a checkpoint file
                edits += _registry_teacher(doc, teacher, key, weights)
                weights_node = doc.node('models.teacher_model.kwargs.weights')
                if weights_node is not None:
                    edits.append((weights_node.start_mark.index, weights_node.end_mark.index, 'null'))
                weights_note = weights
    paper = doc.entry_span('paper')
    if paper is not None:  # the base pair's reported number is not the new pair's
        edits.append((*paper, ''))
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
    header = (f'# {method.upper()}: {student_key} from {teacher_key} ({weights_note}).\n'
              f'# Written by `ttm-distill new-recipe` on {datetime.date.today()} from {base}: same data, schedule,\n'
              f'# optimizer and transforms; {LOSS_KEYS[method]} with {hp}.\n'
              '# These hyperparameters are an untuned starting point (see `ttm-distill calibrate`).\n'
              '# No `paper:` block: the paper reports no number for this pair.\n'
              '#\n# Recipes are code: torchdistill\'s YAML tags import and call Python while the file loads.\n\n')
    new_text = header + body
    _check(new_text)
    if out.exists() and not force:  # again: it may have appeared while the recipe was checked
        raise UsageError(f'{out} exists: choose another -o PATH or pass --force to overwrite it')
    write_text(out, new_text)
    return out


def _check(text: str) -> None:
    """The new recipe composes, its loss builds, and both models build (without downloading weights or building
    the datasets: data may live on another machine); a timm teacher's weights file is loaded into it."""
    doc = RecipeDocument(text, Path('the new recipe'))
    try:
        get_high_level_loss(doc.value('train.criterion'))
        for label in ('teacher_model', 'student_model'):
            key = doc.value(f'models.{label}.key')
            kwargs = dict(doc.value(f'models.{label}.kwargs') or {})
            if key == TIMM_KEY:
                weights_file = kwargs.pop('checkpoint', None)
                model = MODEL_DICT[key](**dict(kwargs, pretrained=False))
                if weights_file:
                    load_weights(model, weights_file, f'models.{label}.kwargs.checkpoint')
            elif key in MODEL_DICT:
                kwargs.pop('weights', None)
                MODEL_DICT[key](**kwargs)
            else:
                torchvision.models.get_model(key, **dict(kwargs, weights=None))
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        raise UsageError(f'the new recipe does not build: {type(exc).__name__}: {one_line(exc)}') \
            from None
