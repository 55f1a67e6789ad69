"""Epoch hooks registered in torchdistill's process registry, for recipes to name."""
from __future__ import annotations

from torch import nn
from torchdistill.core.interfaces.pre_epoch_proc import default_pre_epoch_process_with_teacher
from torchdistill.core.interfaces.registry import register_pre_epoch_proc_func

from .methods import LossHooks

__all__ = ['EPOCH_TELLERS', 'loss_modules', 'pre_epoch_process_with_frozen_teacher', 'tell_epoch']

EPOCH_TELLERS = ('pre_epoch_process_with_frozen_teacher',)
"""the pre-epoch processes that tell the losses the epoch (:func:`tell_epoch`)"""


def loss_modules(criterion: object) -> list[object]:
    """The loss terms of a box's criterion (torchdistill's ``WeightedSumLoss`` keeps them in ``term_dict``) and every
    module inside them."""
    found: list[object] = []
    for term in [criterion, *(t for t, _ in getattr(criterion, 'term_dict', {}).values())]:
        found.extend(term.modules() if isinstance(term, nn.Module) else [term])
    return found


def tell_epoch(criterion: object, epoch: int) -> None:
    """Tell every loss module the runner may ask (:class:`ttm_torchdistill.methods.LossHooks`) the epoch (DKDLoss's
    warm-up follows it)."""
    for module in loss_modules(criterion):
        if isinstance(module, LossHooks):
            module.set_epoch(epoch)


@register_pre_epoch_proc_func
def pre_epoch_process_with_frozen_teacher(self, epoch: int | None = None, **kwargs) -> None:
    """torchdistill's default pre-epoch process, then the teacher in eval mode and the epoch told to the losses.

    torchdistill 1.1.5 leaves the teacher in train mode, so its batch-norm layers would use
    batch statistics and keep updating their running statistics during distillation. A frozen
    teacher must behave as the released model does: ``train.pre_epoch_process:
    'pre_epoch_process_with_frozen_teacher'`` in a recipe. Every loss module of this package
    (:class:`ttm_torchdistill.methods.LossHooks`, e.g. DKDLoss) is then given torchdistill's epoch index (from 0), so
    that a loss that changes over epochs follows the epoch under any runner that calls this process, and after a
    resume.
    """
    default_pre_epoch_process_with_teacher(self, epoch=epoch, **kwargs)
    self.teacher_model.eval()
    if epoch is not None:
        tell_epoch(self.criterion, epoch)
