"""The ranks' agreement on a stop request (:mod:`ttm_torchdistill.stopping`): after each training step every rank
learns whether any rank was asked to stop, so all of them stop after the same step.

One all-reduce of one integer per step, on a CPU process group (Gloo), so that a GPU run does not wait for its device.
What a stopped run writes and how it continues is :meth:`.trainer.Trainer.save_position`'s and :mod:`.loop`'s.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from ..stopping import stop_requested, stop_signal
from .distributed import DistContext

__all__ = ['StopAgreement']


class StopAgreement:
    def __init__(self, ctx: DistContext) -> None:
        self.ctx = ctx
        self.group = None
        self.name = stop_signal().name

    def agreed(self) -> bool:
        """Whether any rank was asked to stop; every rank calls it at the same step and gets the same answer."""
        if not self.ctx.distributed or not dist.is_initialized():
            return stop_requested()
        if self.group is None:  # made by every rank at its first check, the same step on each
            self.group = dist.group.WORLD if dist.get_backend() == 'gloo' else dist.new_group(backend='gloo')
        flag = torch.tensor([int(stop_requested())], dtype=torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return bool(flag.item())
