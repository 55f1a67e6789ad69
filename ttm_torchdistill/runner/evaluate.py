"""Top-1/top-5 evaluation sharded over ranks without padding, reduced across ranks."""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler
from torchdistill.datasets.util import build_data_loader

from ..errors import UsageError
from .distributed import DistContext, all_reduce_sum

__all__ = ['Accuracy', 'ShardSampler', 'build_eval_loader', 'evaluate']


class ShardSampler(Sampler[int]):
    """Indices rank, rank + world, ...: every sample evaluated exactly once over all ranks.

    torch's DistributedSampler pads the last shard with repeated samples, which would bias
    a reduced accuracy; this sampler does not.
    """

    def __init__(self, dataset, rank: int = 0, num_replicas: int = 1) -> None:
        self.size, self.rank, self.num_replicas = len(dataset), rank, num_replicas

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.size, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.num_replicas))


def build_eval_loader(dataset_dict: dict, loader_config: dict, ctx: DistContext, where: str) -> DataLoader:
    """torchdistill's data loader for ``loader_config`` with this rank's shard of the dataset."""
    dataset_id = loader_config.get('dataset_id')
    if dataset_id not in dataset_dict:
        raise UsageError(f'{where}.dataset_id: {dataset_id!r} is not a key of datasets ({", ".join(dataset_dict)})')
    config = dict(loader_config, sampler={'class_or_func': ShardSampler,
                                          'kwargs': {'rank': ctx.rank, 'num_replicas': ctx.world_size}})
    return build_data_loader(dataset_dict[dataset_id], config, distributed=False)


@dataclass(frozen=True)
class Accuracy:
    top1: float
    top5: float
    samples: int


@torch.inference_mode()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device, amp_dtype: torch.dtype | None = None,
             channels_last: bool = False) -> Accuracy:
    """Top-1/top-5 accuracy (%) of ``model`` over the whole dataset, summed across ranks."""
    model.eval()
    stats = torch.zeros(3, dtype=torch.float64, device=device)
    memory_format = torch.channels_last if channels_last else torch.preserve_format
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()
    for batch in loader:
        images, targets = batch[0], batch[1]
        images = images.to(device, non_blocking=True, memory_format=memory_format)
        targets = targets.to(device, non_blocking=True)
        with autocast:
            outputs = model(images)
        top = outputs.topk(min(5, outputs.shape[1]), dim=1).indices
        correct = top.eq(targets[:, None])
        stats += torch.stack([correct[:, 0].sum(), correct.any(dim=1).sum(),
                              torch.tensor(len(targets), device=device)]).to(stats.dtype)
    all_reduce_sum(stats)
    top1, top5, n = stats.tolist()
    return Accuracy(100.0 * top1 / max(n, 1), 100.0 * top5 / max(n, 1), int(n))
