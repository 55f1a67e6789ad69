"""Before the first training step (and for `--check`): the schedule, the model outputs the losses read, the smallest
batch of an epoch, the targets, CRD's memory banks, and one training step on a few samples (state restored); and a
training step that fails, named by its recipe part in one line.

A loss or model that cannot take what an epoch feeds it (ITRD's batch standard deviation on a last batch of one
sample, a feature size that does not match the hooked module, batch norm on one sample) fails here, before anything
is written, instead of at the end of the first epoch with a traceback.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import default_collate
from torchdistill.losses.mid_level import CRDLoss

from ..data import MixupCutmixCollate
from ..errors import DataFileError, TrainingDiverged, TrainingFailed, UsageError, one_line
from ..methods import hooked
from ..processes import EPOCH_TELLERS, tell_epoch
from ..recipe import RecipeView
from .build import box_student
from .datafiles import BATCH_ERRORS
from .iocheck import check_loss_io
from .logs import logger
from .schedule import check_schedule

__all__ = ['STEP_ERRORS', 'check_epoch_followers', 'check_memory_banks', 'check_one_batch', 'check_passed',
           'check_smallest_batch', 'check_targets', 'check_training', 'describe_step_failure', 'evaluation',
           'probe_step', 'smallest_batch']

STEP_ERRORS = (RuntimeError, TypeError, ValueError, KeyError, IndexError)
"""what a model's forward or a loss raises for inputs it cannot take (CUDA's out-of-memory is a RuntimeError)"""


def loss_terms(box, view: RecipeView) -> list[tuple[str, nn.Module]]:
    """(recipe label, module) of each term of the box's loss, e.g. ``...sub_terms.itrd.criterion (ITRDLoss)``."""
    return [(view.term_label(name), term) for name, (term, _) in getattr(box.criterion, 'term_dict', {}).items()]


def _parts(run, box) -> list[tuple[str, object]]:
    """(recipe label, object) of everything a training step runs, outermost first."""
    parts: list[tuple[str, object]] = [(run.view.criterion_label, box.criterion)]
    parts += loss_terms(box, run.view)
    for role, model, label, config in (('student', box_student(box), run.student_key, run.student_config),
                                       ('teacher', getattr(box, 'teacher_model', None), 'teacher_model',
                                        run.teacher_config)):
        if model is None:
            continue
        inner = getattr(model, 'module', model)  # DistributedDataParallel
        original = run.student if role == 'student' else run.teacher
        if inner is not original:  # an auxiliary model wrapper around the model
            section = role if run.teacher is not None else 'model'
            wrapper = f'train.{section}.auxiliary_model_wrapper ({type(inner).__name__})'
            parts += [(wrapper, model), (wrapper, inner)]
        parts.append((f'models.{label} ({(config or {}).get("key")})', original))
    return parts


def _failing_part(exc: BaseException, parts: list[tuple[str, object]]) -> str | None:
    """The innermost recipe part whose code is on the exception's traceback (a frame whose ``self`` it is)."""
    labels = {}
    for label, obj in parts:
        labels.setdefault(id(obj), label)
    found, tb = None, exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get('self')
        if owner is not None and id(owner) in labels:
            found = labels[id(owner)]
        tb = tb.tb_next
    return found


def describe_step_failure(run, box, exc: BaseException, what: str) -> str:
    """One line: ``RECIPE: PART: WHAT fails: Type: message``, PART the recipe part that raised."""
    part = _failing_part(exc, _parts(run, box)) or run.view.criterion_label
    return f'{run.recipe_path}: {part}: {what} fails: {type(exc).__name__}: {one_line(exc)[:300]}'


@contextlib.contextmanager
def evaluation(run, label: str, what: str, kept: Path | None = None) -> Iterator[None]:
    """A validation or test pass of ``models.<label>``: a model that raises on a batch (CUDA out of memory, an input
    it cannot take) is one TrainingFailed line naming it; ``kept``: a training run's last checkpoint (it stays)."""
    try:
        yield
    except STEP_ERRORS as exc:
        config = run.teacher_config if label == 'teacher_model' else run.student_config
        keep = '' if kept is None else '; training stopped' + (
            f', the last good checkpoint is kept ({kept})' if kept.is_file() else '')
        raise TrainingFailed(f'{run.recipe_path}: models.{label} ({(config or {}).get("key")}): {what} fails: '
                             f'{type(exc).__name__}: {one_line(exc)[:300]}{keep}') from None


def smallest_batch(loader: object) -> tuple[int, int, int] | None:
    """(samples per process, batch size, smallest batch of an epoch) of a training loader; None where its batches
    come from a batch sampler of the recipe's own."""
    batch_size, sampler = getattr(loader, 'batch_size', None), getattr(loader, 'sampler', None)
    if not batch_size or sampler is None:
        return None
    try:
        samples = len(sampler)
    except TypeError:
        return None
    rest = samples % batch_size
    return samples, batch_size, batch_size if getattr(loader, 'drop_last', False) or rest == 0 else rest


def check_smallest_batch(source: Path, box, view: RecipeView, loader: object) -> int | None:
    """Refuse a loader whose smallest batch is below what a loss term needs (its ``min_batch_size``); returns the
    smallest batch (None where unknown)."""
    found = smallest_batch(loader)
    if found is None:
        return None
    samples, batch_size, smallest = found
    for label, term in loss_terms(box, view):
        need = max((m.min_batch_size for m in hooked(term)), default=1)
        if smallest < need:
            raise UsageError(f'{source}: train.train_data_loader: the last batch of each epoch holds {smallest} '
                             f'sample(s) ({samples} samples per process in batches of {batch_size}), but {label} '
                             f'needs at least {need} per batch; set train.train_data_loader.kwargs.drop_last: True '
                             'or another batch size')
    return smallest


def check_epoch_followers(source: Path, box, view: RecipeView, process: object) -> bool:
    """Refuse a loss term that follows the epoch (``needs_epoch``: DKD's warm-up) where the recipe's pre-epoch process
    does not tell the losses the epoch; returns whether it does. ``process``: the recipe's
    ``train.pre_epoch_process``."""
    if process in EPOCH_TELLERS:
        return True
    for label, term in loss_terms(box, view):
        if any(m.needs_epoch for m in hooked(term)):
            raise UsageError(f'{source}: {label} follows the epoch (its warm-up), which train.pre_epoch_process '
                             f'({process!r}) does not tell it: set train.pre_epoch_process: '
                             f"'{EPOCH_TELLERS[0]}'")
    return False


def check_memory_banks(source: Path, box, view: RecipeView, loader: object) -> None:
    """Refuse a CRD loss term whose memory banks (one row per training sample, read and written at the sample's index
    in the training data) hold fewer rows than the training data has samples: the first batch with a later sample
    would index past them (on CUDA, a device-side assert that ends the process)."""
    samples = len(loader.dataset)
    for label, term in loss_terms(box, view):
        rows = term.memory_v1.shape[0] if isinstance(term, CRDLoss) else samples
        if rows < samples:
            raise UsageError(f'{source}: {label}: its memory banks hold {rows} samples (output_size), but the '
                             f'training data has {samples}: set the term\'s output_size and num_samples to {samples}')


def check_targets(source: Path, box, view: RecipeView, loader: object) -> None:
    """Refuse a loss term that needs one class index per sample (``needs_class_indices``: DKD) where the training
    loader's collate gives soft targets (Mixup/CutMix)."""
    collate = getattr(loader, 'collate_fn', None)
    if not isinstance(collate, MixupCutmixCollate):
        return
    for label, term in loss_terms(box, view):
        if any(m.needs_class_indices for m in hooked(term)):
            raise UsageError(f'{source}: {label} needs one class index per sample, but train.train_data_loader.'
                             f'collate_fn ({collate.key}) gives soft targets: remove the collate_fn (Mixup/CutMix) '
                             'from the recipe, or use a method that takes soft targets')


def _sample_batch(run, loader: object, count: int) -> tuple:
    """``count`` samples of the training loader's dataset, collated as the loader collates them: (images, targets,
    supp). A sample that cannot be read, or samples that cannot be formed into a batch, are one DataFileError line."""
    dataset = loader.dataset
    samples = []
    for i in range(min(count, len(dataset))):
        try:
            samples.append(dataset[i])
        except (DataFileError, *BATCH_ERRORS) as exc:
            raise run.data_error('train', f'sample {i}', exc) from exc
    try:
        batch = (getattr(loader, 'collate_fn', None) or default_collate)(samples)
    except (DataFileError, *BATCH_ERRORS) as exc:
        raise run.data_error('train', f'a batch of samples 0-{len(samples) - 1}, before training,', exc) from exc
    return batch[0], batch[1], (batch[2] if len(batch) > 2 else {})


def _eager() -> contextlib.AbstractContextManager:
    """Compiled models run eagerly here: one probe is not worth compiling a batch shape."""
    stance = getattr(torch.compiler, 'set_stance', None)
    return stance('force_eager') if stance is not None else contextlib.nullcontext()


@torch.no_grad()
def probe_step(run, box, loader: object, count: int, note: str = '') -> None:
    """The training step's forward (models, auxiliary wrappers, loss) on ``count`` samples of the training data,
    modes as in training; buffers (batch-norm statistics, CRD's memory bank) are put back afterwards. A failure is
    one UsageError line naming the recipe part (``note`` added)."""
    student = box_student(box)
    modules = [m for m in (student, getattr(box, 'teacher_model', None)) if m is not None]
    modules += [term for _, term in loss_terms(box, run.view) if isinstance(term, nn.Module)]
    saved = [(buffer, buffer.clone()) for module in modules for buffer in module.buffers()]
    modes = [(module, module.training) for module in modules]
    images, targets, supp_dict = _sample_batch(run, loader, count)
    student.train()
    if run.teacher is not None:
        box.teacher_model.eval()
    try:
        with run.autocast(), _eager():
            box.forward_process(images.to(run.ctx.device, memory_format=run.memory_format),
                                targets.to(run.ctx.device), supp_dict)
    except STEP_ERRORS as exc:
        what = f'the training step on {len(images)} sample(s) of the training data, before training,'
        raise UsageError(describe_step_failure(run, box, exc, what) + note) from None
    finally:
        for buffer, value in saved:
            buffer.copy_(value)
        for module, training in modes:
            module.train(training)


def check_training(run, box) -> None:
    """Everything an epoch would feed the loss and models, checked before any work (one UsageError line): the
    schedule against the epoch's iterations, the model outputs each loss term reads, the smallest batch, the targets,
    CRD's memory banks against the training data, the epoch a loss follows; then the training step's forward on two
    samples (one where the last batch holds one)."""
    train_config, loader = run.config['train'], box.train_data_loader
    check_schedule(run.recipe_path, train_config, box, len(loader))
    check_loss_io(run.recipe_path, run.view)
    smallest = check_smallest_batch(run.recipe_path, box, run.view, loader)
    check_targets(run.recipe_path, box, run.view, loader)
    check_memory_banks(run.recipe_path, box, run.view, loader)
    if check_epoch_followers(run.recipe_path, box, run.view, train_config.get('pre_epoch_process')):
        tell_epoch(box.criterion, 0)  # for the probe; each epoch's pre-epoch process tells it again
    one = smallest == 1  # a last batch of one sample: the probe takes one (batch norm refuses it)
    probe_step(run, box, loader, 1 if one else 2, note=(
        '; the last batch of each epoch holds 1 sample: set train.train_data_loader.kwargs.drop_last: True or '
        'another batch size') if one else '')


@torch.no_grad()
def check_one_batch(run, box) -> dict:
    """`train --check`: the loss on one training batch (no update), then the line saying the check passed."""
    images, targets, supp_dict = next(iter(run.batches(box.train_data_loader, 'train')))
    try:
        with run.autocast():
            loss = box.forward_process(images.to(run.ctx.device, memory_format=run.memory_format),
                                       targets.to(run.ctx.device), supp_dict)
    except STEP_ERRORS as exc:
        raise UsageError(describe_step_failure(run, box, exc, 'the loss on one training batch')) from None
    if not torch.isfinite(loss).all():  # the values diverge (exit 1), the recipe builds
        raise TrainingDiverged(f'{run.recipe_path}: {run.view.criterion_label}: the loss on one training batch is '
                               f'{loss.item()}')
    return check_passed(run, f'{len(box.train_data_loader)} training batches per epoch')


def check_passed(run, what: str) -> dict:
    """The result of ``--check``: a log line, and the summary-like dict the command returns."""
    logger.info('check passed: %s builds (%s); nothing was trained or written', run.name, what)
    return {'recipe': run.name, 'check': 'passed'}
