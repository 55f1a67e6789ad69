"""Epoch hooks registered in torchdistill's process registry, for recipes to name."""
from __future__ import annotations

from torchdistill.core.interfaces.pre_epoch_proc import default_pre_epoch_process_with_teacher
from torchdistill.core.interfaces.registry import register_pre_epoch_proc_func

__all__ = ['pre_epoch_process_with_frozen_teacher']


@register_pre_epoch_proc_func
def pre_epoch_process_with_frozen_teacher(self, epoch: int | None = None, **kwargs) -> None:
    """torchdistill's default pre-epoch process, then the teacher in eval mode.

    torchdistill 1.1.5 leaves the teacher in train mode, so its batch-norm layers would use
    batch statistics and keep updating their running statistics during distillation. A frozen
    teacher must behave as the released model does: ``train.pre_epoch_process:
    'pre_epoch_process_with_frozen_teacher'`` in a recipe.
    """
    default_pre_epoch_process_with_teacher(self, epoch=epoch, **kwargs)
    self.teacher_model.eval()
