"""Mixed precision: autocast of the forward passes (``--amp bf16|fp16``), and fp16's gradient scaling inside the
recipe's own post-forward process.

torchdistill's ``default_post_forward_process`` backpropagates through the box's ``accelerator`` when it has one,
clips, steps the optimizer and the schedule. For ``--amp fp16`` the box gets a stand-in accelerator whose
``backward`` scales the loss (and unscales the gradients before they are clipped) and an optimizer whose ``step`` is
the GradScaler's (skipped where gradients are not finite, then the scale is updated). The recipe's process runs as it
is: gradient accumulation, clipping and the per-iteration schedule are its own. A recipe with another post-forward
process is refused, as its backward and step cannot be known to go through these.
"""
from __future__ import annotations

import contextlib

import torch

from ..errors import UsageError

__all__ = ['AMP_DTYPES', 'DEFAULT_POST_FORWARD', 'autocast', 'scale_fp16']

AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
DEFAULT_POST_FORWARD = 'default_post_forward_process'


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """The forward passes' autocast (nothing without ``--amp``)."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


class _ScaledBackward:
    """The box's ``accelerator`` for fp16: ``backward`` of the scaled loss; at the end of an accumulation, gradients
    unscaled before torchdistill's process clips them."""

    def __init__(self, box, scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> None:
        self.box, self.scaler, self.optimizer = box, scaler, optimizer

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()
        box = self.box
        if box.max_grad_norm is not None and box.stage_grad_count % box.grad_accum_step == 0:
            self.scaler.unscale_(self.optimizer)


class _ScaledOptimizer:
    """The box's optimizer with ``step`` through the GradScaler; everything else is the optimizer's."""

    def __init__(self, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
        self._optimizer, self._scaler = optimizer, scaler

    def step(self, *args, **kwargs) -> None:
        self._scaler.step(self._optimizer, *args, **kwargs)
        self._scaler.update()

    def __getattr__(self, name: str):
        return getattr(self._optimizer, name)


def scale_fp16(box, train_config: dict, source, device: torch.device) -> torch.amp.GradScaler:
    """Route the box's backward and optimizer step through a new GradScaler; one UsageError line where the recipe's
    post-forward process is not torchdistill's default (whose backward and step go through the box)."""
    process = train_config.get('post_forward_process', DEFAULT_POST_FORWARD)
    if process != DEFAULT_POST_FORWARD:
        raise UsageError(f'{source}: --amp fp16 scales the loss inside torchdistill\'s {DEFAULT_POST_FORWARD}, but '
                         f'train.post_forward_process is {process!r}; use --amp bf16 (no scaling), or the default '
                         'process')
    scaler = torch.amp.GradScaler(device.type)
    optimizer = box.optimizer
    box.accelerator = _ScaledBackward(box, scaler, optimizer)
    box.optimizer = _ScaledOptimizer(optimizer, scaler)
    return scaler
