"""torchdistill's training / distillation box for a recipe, where a failing part names itself.

torchdistill builds loaders, models' wrappers, the loss, the optimizer and the scheduler in one
``setup``; here each stage is wrapped (the optimizer and scheduler are first built on a throwaway
parameter with torchdistill's own getters), so a TypeError/ValueError/KeyError raised while
constructing a part becomes one line: its key path, its key and the message.

A distillation box here also takes the teacher's outputs from ``supp_dict['cached_data']`` (as torchdistill's boxes
did before 1.0) instead of running the frozen teacher: runs trained in lockstep (:mod:`.lockstep`) share one teacher
forward per batch, whose hooks have filled every box's teacher I/O dict.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from torchdistill.common.constant import SELF_MODULE_PATH
from torchdistill.core.distillation import DistillationBox
from torchdistill.core.training import TrainingBox
from torchdistill.core.util import extract_io_dict, update_io_dict
from torchdistill.datasets.util import build_data_loaders
from torchdistill.losses.registry import get_mid_level_loss
from torchdistill.models.wrapper import AuxiliaryModelWrapper
from torchdistill.optim.registry import get_optimizer, get_scheduler

from ..errors import UsageError, one_line

__all__ = ['CACHED_TEACHER', 'box_student', 'build_box', 'recipe_part', 'set_box_student']

CACHED_TEACHER = 'cached_data'
"""the supp_dict key of the teacher's outputs of a batch, when they were computed already"""


@contextlib.contextmanager
def recipe_part(source: Path, where: str, key: object = None) -> Iterator[None]:
    """Re-raise a TypeError/ValueError/KeyError of the enclosed construction as UsageError naming the part."""
    label = f'{where} ({key})' if isinstance(key, str) else where
    try:
        yield
    except KeyError as exc:
        raise UsageError(f'{source}: {label}: missing key {one_line(exc)}') from None
    except (TypeError, ValueError) as exc:
        raise UsageError(f'{source}: {label}: {one_line(exc)}') from None


def _key(config: object) -> object:
    return config.get('key') if isinstance(config, dict) else None


class _NamedParts:
    """Mixin for torchdistill's boxes: loaders one by one, and the loss, each inside recipe_part."""

    source: Path

    def setup_data_loaders(self, train_config: dict) -> None:
        # the training loader only: the runner builds its own validation loader, sharded without padding
        config = train_config.get('train_data_loader', {})
        config.setdefault('requires_supp', True)
        with recipe_part(self.source, 'train.train_data_loader'):
            self.train_data_loader = build_data_loaders(self.dataset_dict, [config], self.distributed,
                                                        self.accelerator)[0]

    def setup_loss(self, train_config: dict) -> None:
        criterion = train_config.get('criterion')
        try:
            with recipe_part(self.source, 'train.criterion', _key(criterion)):
                super().setup_loss(train_config)
        except UsageError:
            _name_failing_term(self.source, criterion)
            raise


def _name_failing_term(source: Path, criterion: object) -> None:
    """Build each sub-term alone; the first one that fails raises UsageError with its own key path."""
    sub_terms = ((criterion or {}).get('kwargs') or {}).get('sub_terms') if isinstance(criterion, dict) else None
    for name, term in (sub_terms or {}).items():
        config = term.get('criterion') if isinstance(term, dict) else None
        with recipe_part(source, f'train.criterion.kwargs.sub_terms.{name}.criterion', _key(config)):
            get_mid_level_loss(config, term.get('criterion_wrapper'))


class _DistillationBox(_NamedParts, DistillationBox):
    def __init__(self, source: Path, *args) -> None:
        self.source = source
        super().__init__(*args)

    def setup_teacher_student_models(self, teacher_config: dict, student_config: dict) -> None:
        with recipe_part(self.source, 'train.teacher / train.student'):
            for role, config in (('teacher', teacher_config), ('student', student_config)):
                if not config.get('auxiliary_model_wrapper') and not config.get('sequential'):  # hooks the model
                    _check_hooks(self.source, role, config, getattr(self, f'org_{role}_model', None))
            try:
                super().setup_teacher_student_models(teacher_config, student_config)
            except (AttributeError, IndexError):  # torchdistill's lookup of a forward_hook path that names no module
                for role, config in (('teacher', teacher_config), ('student', student_config)):
                    _check_hooks(self.source, role, config, getattr(self, f'{role}_model', None))
                raise


def _reaches(model: nn.Module, path: str) -> bool:
    """Whether ``path`` names a module of ``model`` (inside DDP too; list indices as torchdistill reads them)."""
    module = model
    for name in path.split('.'):
        inner = module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module
        if hasattr(module, name):
            module = getattr(module, name)
        elif hasattr(inner, name):
            module = getattr(inner, name)
        elif isinstance(inner, (nn.Sequential, nn.ModuleList)) and name.lstrip('-').isdigit() and \
                -len(inner) <= int(name) < len(inner):
            module = inner[int(name)]
        else:
            return False
    return isinstance(module, nn.Module)


def _check_hooks(source: Path, role: str, config: dict, model: nn.Module | None) -> None:
    """One line for a ``train.<role>.forward_hook`` path that names no module of the model as the box holds it
    (inside its auxiliary wrapper: the model is ``model.``)."""
    if model is None:
        return
    for io, paths in (config.get('forward_hook') or {}).items():
        for path in paths or []:
            if isinstance(path, str) and not _reaches(model, path.removeprefix('+')):
                names = sorted({n.split('.')[0] for n, _ in model.named_modules() if n})
                raise UsageError(f'{source}: train.{role}.forward_hook.{io}: {path!r} names no module of the '
                                 f'{role} ({type(model).__name__}, whose modules are {", ".join(names)})')

    def get_teacher_output(self, sample_batch, targets, supp_dict, **kwargs):
        """torchdistill's, except that outputs given as ``supp_dict['cached_data']`` stand for the teacher's forward:
        its hooks have run, so this box's I/O dict holds what they caught; an auxiliary wrapper's secondary forward
        (e.g. CRD's trainable teacher embedding) is this box's own and runs here."""
        cached = (supp_dict or {}).get(CACHED_TEACHER)
        if cached is None:
            return super().get_teacher_output(sample_batch, targets, supp_dict, **kwargs)
        io_dict = extract_io_dict(self.teacher_io_dict, self.device)
        io_dict[SELF_MODULE_PATH]['output'] = cached
        if isinstance(self.teacher_model, AuxiliaryModelWrapper):
            self.teacher_model.secondary_forward(io_dict)
        update_io_dict(io_dict, extract_io_dict(self.teacher_io_dict, self.device))
        return cached, io_dict


class _TrainingBox(_NamedParts, TrainingBox):
    def __init__(self, source: Path, *args) -> None:
        self.source = source
        super().__init__(*args)

    def setup_model(self, model_config: dict) -> None:
        with recipe_part(self.source, 'train.model'):
            super().setup_model(model_config)


def _check_optimizer_and_scheduler(source: Path, train_config: dict) -> None:
    """Build the recipe's optimizer and scheduler on one throwaway parameter, as torchdistill will."""
    optim_config = train_config.get('optimizer') or {}
    if not optim_config:
        return
    with recipe_part(source, 'train.optimizer', _key(optim_config)):
        optimizer = get_optimizer(nn.Linear(1, 1), optim_config['key'], **optim_config['kwargs'])
    scheduler_config = train_config.get('scheduler') or {}
    if scheduler_config:
        with recipe_part(source, 'train.scheduler', _key(scheduler_config)):
            get_scheduler(optimizer, scheduler_config['key'], **scheduler_config['kwargs'])


def build_box(source: Path, teacher: nn.Module | None, student: nn.Module, datasets: dict, train_config: dict,
              device: torch.device, device_ids: list[int] | None, distributed: bool):
    """torchdistill's DistillationBox (with a teacher) or TrainingBox for a single-stage ``train`` config."""
    _check_optimizer_and_scheduler(source, train_config)
    with recipe_part(source, 'train'):  # what the stages above do not cover (wrappers, processes)
        if teacher is None:
            return _TrainingBox(source, student, datasets, train_config, device, device_ids, distributed, 1)
        return _DistillationBox(source, teacher, student, datasets, train_config, device, device_ids, distributed, 1)


def box_student(box: TrainingBox | DistillationBox) -> nn.Module:
    """The student as the box trains it (wrapped, e.g. in DDP or an auxiliary wrapper): a TrainingBox's model."""
    return box.student_model if isinstance(box, DistillationBox) else box.model


def set_box_student(box: TrainingBox | DistillationBox, model: nn.Module) -> None:
    """Let the box train ``model`` (the student wrapped anew, e.g. in DDP)."""
    if isinstance(box, DistillationBox):
        box.student_model = model
    else:
        box.model = model
