"""Before the first step: every loss term reads a model input or output that the models provide."""
from __future__ import annotations

import inspect
from pathlib import Path

from torchdistill.losses.registry import MIDDLE_LEVEL_LOSS_DICT

from ..errors import UsageError
from ..recipe import SUB_TERMS, LossTerm, RecipeView

__all__ = ['check_loss_io']

SELF = '.'
"""torchdistill's path of a model's own output"""


def _provided(hooks: dict) -> set[tuple[str, str]]:
    """(module path, 'input' | 'output') pairs a model's io dict holds: its own output and its forward hooks."""
    return {(SELF, 'output'), *((p, 'input') for p in hooks.get('input') or ()),
            *((p, 'output') for p in hooks.get('output') or ())}


def _default_io(loss_key: object, prefix: str) -> str | None:
    """The io a registered loss reads by default for ``<prefix>_module_path`` (its ``<prefix>_module_io`` default)."""
    cls = MIDDLE_LEVEL_LOSS_DICT.get(loss_key) if isinstance(loss_key, str) else None
    try:
        param = inspect.signature(cls).parameters.get(f'{prefix}_module_io') if cls is not None else None
    except (TypeError, ValueError):
        return None
    return param.default if param is not None and isinstance(param.default, str) else None


def _reads(term: LossTerm) -> list[tuple[str, str, str, str | None]]:
    """(key, role, module path, io) of every model input/output a loss term reads: the criterion's
    ``<role>..._module_path``/``_module_io`` keyword pairs and its wrapper's ``module_path``/``io`` entries; io is
    the loss's default where the recipe names none, else None (a fixed one, e.g. CRDLoss reads the input of
    ``student_empty_module_path``)."""
    reads = []
    for key, path in term.kwargs.items():
        if key.endswith('_module_path') and isinstance(path, str):
            prefix = key[:-len('_module_path')]
            role = 'teacher' if prefix.startswith('teacher') else 'student'
            io = term.kwargs.get(f'{prefix}_module_io') or _default_io(term.key, prefix)
            reads.append((f'criterion.kwargs.{key}', role, path, io))
    for name, spec in term.wrapper_kwargs.items():
        if isinstance(spec, dict) and isinstance(spec.get('module_path'), str):
            role = 'teacher' if spec.get('is_from_teacher') else 'student'
            reads.append((f'criterion_wrapper.kwargs.{name}.module_path', role, spec['module_path'], spec.get('io')))
    return reads


def check_loss_io(source: Path, view: RecipeView) -> None:
    """Raise UsageError naming the first loss term that reads a (module path, io) its model does not provide."""
    sections = {role: view.train_section(role) for role in ('student', 'teacher')}
    distill = view.has_teacher
    provided = {role: _provided(view.forward_hooks(role)) for role in sections}
    part = view.criterion_label
    for term in view.loss_terms():
        name = term.name
        for key, role, path, io in _reads(term):
            if role == 'teacher' and not distill:
                raise UsageError(f'{source}: {part}: {SUB_TERMS}.{name}.{key}={path!r}: this recipe has no teacher')
            ok = (path, io) in provided[role] if io else any(p == path for p, _ in provided[role])
            if not ok:
                have = ', '.join(f'{p!r} ({i})' for p, i in sorted(provided[role]))
                read = f'{SUB_TERMS}.{name}.{key}={path!r}' + (f' (io {io!r})' if io else '')
                raise UsageError(f'{source}: {part}: {read}: the {role} provides no such {io or "input or output"}; '
                                 f'it provides {have}; a module\'s input or output must be listed in '
                                 f'train.{sections[role]}.forward_hook.{io or "input/output"}')
