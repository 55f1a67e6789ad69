"""--compile: torch.compile of the student and the teacher in place, so their state dicts keep their keys.

``nn.Module.compile`` compiles a module's call where it stands: whatever wraps it (DistributedDataParallel,
torchdistill's auxiliary wrappers such as CRD's and ITRD's) and whatever calls it (the training step, validation,
the test pass) runs the compiled code, and ``state_dict()`` has no ``_orig_mod.`` prefix, so checkpoints, ``--resume``
and torchdistill's ``load_ckpt`` are unchanged. Shapes are static (``dynamic=False``): the full batch, the last
smaller one and the evaluation batches each compile once; autocast (``--amp``) and channels_last inputs are traced
as they come.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UsageError
from .logs import logger

__all__ = ['COMPILE_MODES', 'compile_models', 'mark_step']

COMPILE_MODES = ('default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs')
"""torch.compile's modes; reduce-overhead and max-autotune replay CUDA graphs on a GPU"""
CACHE_SIZE = 16
"""compiled variants kept per module (train/eval x batch sizes; torch's default is 8)"""


def compile_models(models: dict[str, nn.Module | None], mode: str) -> None:
    """Compile each module of ``models`` (label -> module; None skipped) in place with ``mode``; lazy: the first
    forward of each shape compiles."""
    if mode not in COMPILE_MODES:
        raise UsageError(f'--compile {mode!r}: expected one of {", ".join(COMPILE_MODES)}')
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, CACHE_SIZE)
    labels = []
    for label, model in models.items():
        if model is not None:
            model.compile(mode=mode, dynamic=False)
            labels.append(label)
    logger.info('torch.compile (mode %s) of %s: the first steps of each batch shape compile (seconds to minutes)',
                mode, ', '.join(labels))


def mark_step(mode: str | None) -> None:
    """Before each training step: a new iteration for CUDA graph trees (modes that replay CUDA graphs)."""
    if mode in ('reduce-overhead', 'max-autotune'):
        torch.compiler.cudagraph_mark_step_begin()
