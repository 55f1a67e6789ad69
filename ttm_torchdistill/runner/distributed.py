"""torch.distributed set-up for torchrun and SLURM: NCCL on GPUs, Gloo on CPU.

torchdistill's ``init_distributed_mode`` assumes CUDA and NCCL; this module picks the backend
from the device so the same command trains on CPU ranks too.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import UsageError

__all__ = ['DistContext', 'all_gather_objects', 'all_reduce_sum', 'barrier', 'broadcast_object', 'setup_distributed',
           'teardown']


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _launch_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's or SLURM's environment; (0, 1, 0) otherwise."""
    env = os.environ
    if 'RANK' in env and 'WORLD_SIZE' in env:
        return int(env['RANK']), int(env['WORLD_SIZE']), int(env.get('LOCAL_RANK', 0))
    if 'SLURM_PROCID' in env and int(env.get('SLURM_NTASKS', 1)) > 1:
        for name in ('MASTER_ADDR', 'MASTER_PORT'):
            if name not in env:
                raise UsageError(f'running under srun with several tasks but {name} is not set '
                                 '(see docs/distributed.md)')
        return int(env['SLURM_PROCID']), int(env['SLURM_NTASKS']), int(env.get('SLURM_LOCALID', 0))
    return 0, 1, 0


def setup_distributed(device: str | None) -> DistContext:
    """Pick the device and, when launched with several processes, join the process group."""
    rank, world_size, local_rank = _launch_env()
    kind = device or ('cuda' if torch.cuda.is_available() else 'cpu')
    if kind not in ('cuda', 'cpu'):
        raise UsageError(f'--device {kind!r}: accepted values are cuda and cpu')
    if kind == 'cuda':
        if not torch.cuda.is_available():
            raise UsageError('--device cuda: no CUDA device is available here (use --device cpu)')
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        # like torchdistill's example runner: pick the fastest convolution algorithms once per input shape
        torch.backends.cudnn.benchmark = True
        torch_device = torch.device('cuda', index)
    else:
        torch_device = torch.device('cpu')
    ctx = DistContext(rank, world_size, local_rank, torch_device)
    if ctx.distributed and not dist.is_initialized():
        backend = 'nccl' if kind == 'cuda' else 'gloo'
        kwargs = {'device_id': torch_device} if kind == 'cuda' else {}
        os.environ.setdefault('RANK', str(rank))
        os.environ.setdefault('WORLD_SIZE', str(world_size))
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size, **kwargs)
    return ctx


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks in place (a no-op in a single process); returns the tensor."""
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj: object) -> list:
    """Every rank's ``obj``, in rank order."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: object) -> object:
    """Rank 0's ``obj`` on every rank (``obj`` itself in a single process)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]
