"""CIFAR held in memory and augmented by the batch on the run's device, for the CIFAR recipes' one-``--set`` switch.

``CIFAR100InMemory`` (and ``CIFAR10InMemory``) are torchvision's CIFAR datasets, built with the same arguments, whose
``transform`` must be the recipes' pipeline: ``RandomCrop(32, padding=p)`` (zero padding) and
``RandomHorizontalFlip(p)``, each optional, then ``ToTensor()`` and an optional ``Normalize(mean, std)``. Indexed one
sample at a time (torchdistill's own runner, a loader with a dataset wrapper such as CRD's) they are torchvision's
datasets. ``ttm-distill`` replaces a loader over one (:func:`device_batches`) by :class:`DeviceBatchLoader`: the
images as one padded uint8 tensor on the device, and per batch one gather (crop offsets and flips) plus ToTensor's
and Normalize's arithmetic, so the pixels equal torchvision's for the same offsets and flips.

Epoch semantics are the loader's: its sampler (RandomSampler, or DistributedSampler with its shard and
``set_epoch``) orders the epoch, with its batch size and ``drop_last``. Offsets (uniform in 0..2p, as
RandomCrop's ``torch.randint``) and flips (``torch.rand < p``) are drawn for the whole epoch from torch's global CPU
generator when the epoch starts, so the seed fixes them on any device and a resumed run (which restores that
generator) repeats them.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import BatchSampler, Subset
from torch.utils.data._utils.collate import default_collate
from torchdistill.datasets.registry import register_dataset
from torchdistill.datasets.wrapper import BaseDatasetWrapper
from torchvision import datasets
from torchvision import transforms as T

__all__ = ['BatchAugment', 'CIFAR10InMemory', 'CIFAR100InMemory', 'DeviceBatchLoader', 'crop_flip_normalize',
           'device_batches']


def crop_flip_normalize(padded: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor,
                        size: int, mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> torch.Tensor:
    """Float images (B, C, size, size) from ``padded`` uint8 images (N, C, H, W), as torchvision's per-sample
    ``crop(top, left)``, ``hflip`` where ``flips``, ``ToTensor`` and ``Normalize(mean, std)`` would make them.

    ``indices`` (B,) pick the images, ``offsets`` (B, 2) are each crop's (top, left), ``flips`` (B,) bool.
    """
    steps = torch.arange(size, device=padded.device)
    rows = offsets[:, :1] + steps
    cols = offsets[:, 1:] + torch.where(flips[:, None], size - 1 - steps, steps)
    channels = torch.arange(padded.shape[1], device=padded.device)
    x = padded[indices[:, None, None, None], channels[None, :, None, None], rows[:, None, :, None],
               cols[:, None, None, :]]
    x = x.to(torch.get_default_dtype()).div(255)  # ToTensor
    if mean is not None:
        x = x.sub_(mean.view(-1, 1, 1)).div_(std.view(-1, 1, 1))  # Normalize, in its order of operations
    return x


def _padding(crop: T.RandomCrop, size: int) -> int:
    """RandomCrop's padding when it pads all sides alike with zeros to a crop of the image's own size."""
    pad = crop.padding or 0
    if isinstance(pad, Sequence):
        if len(set(pad)) != 1:
            raise ValueError(f'RandomCrop(padding={list(pad)}): the batched crop pads all sides alike')
        pad = pad[0]
    if tuple(crop.size) != (size, size) or crop.fill != 0 or crop.padding_mode != 'constant' or crop.pad_if_needed:
        raise ValueError(f'{crop!r}: the batched crop takes RandomCrop({size}, padding=P) with zero padding')
    return int(pad)


@dataclass(frozen=True)
class BatchAugment:
    """The recipe's per-sample transform, as parameters of :func:`crop_flip_normalize`."""

    size: int
    padding: int = 0
    crop: bool = False
    flip_p: float = 0.0
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @classmethod
    def from_transform(cls, transform: object, size: int) -> BatchAugment:
        """Parse ``Compose([RandomCrop, RandomHorizontalFlip, ToTensor, Normalize])`` (crop, flip and Normalize
        optional); any other transform is a ValueError naming what is accepted."""
        steps = list(transform.transforms) if isinstance(transform, T.Compose) else [transform]
        found = {}
        order = [T.RandomCrop, T.RandomHorizontalFlip, T.ToTensor, T.Normalize]
        position = 0
        for step in steps:
            kinds = [k for k in order[position:] if type(step) is k]
            if not kinds:
                raise ValueError(f'transform {step!r} is not one the batched augmentation makes: it takes '
                                 'RandomCrop(size, padding), RandomHorizontalFlip(p), ToTensor(), Normalize(mean, std) '
                                 'in this order (crop, flip and Normalize optional)')
            position = order.index(kinds[0]) + 1
            found[kinds[0]] = step
        if T.ToTensor not in found:
            raise ValueError('the batched augmentation needs ToTensor() in the transform (it makes float images)')
        crop, flip, norm = found.get(T.RandomCrop), found.get(T.RandomHorizontalFlip), found.get(T.Normalize)
        return cls(size=size, padding=_padding(crop, size) if crop else 0, crop=crop is not None,
                   flip_p=float(flip.p) if flip else 0.0, mean=tuple(map(float, norm.mean)) if norm else None,
                   std=tuple(map(float, norm.std)) if norm else None)

    def draw(self, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Crop offsets (count, 2), uniform in 0 .. 2 * padding, and flips (count,), from torch's global generator."""
        offsets = (torch.randint(0, 2 * self.padding + 1, (count, 2)) if self.crop and self.padding
                   else torch.full((count, 2), self.padding, dtype=torch.long))
        flips = torch.rand(count) < self.flip_p if self.flip_p > 0 else torch.zeros(count, dtype=torch.bool)
        return offsets, flips


class _InMemory:
    """What the CIFAR classes add to torchvision's: the batch augmentation and the device copy of the images."""

    data: object
    targets: list
    transform: object
    target_transform: object

    def _set_up_batches(self) -> None:
        if self.target_transform is not None:
            raise ValueError('target_transform is not supported by the in-memory CIFAR datasets')
        self.batch_augment = BatchAugment.from_transform(self.transform, size=self.data.shape[1])
        self._on_device: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def device_tensors(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(the images zero-padded by the crop's padding, uint8 (N, C, H + 2p, W + 2p); the targets) on ``device``."""
        key = str(device)
        if key not in self._on_device:
            pad = self.batch_augment.padding
            images = torch.from_numpy(self.data).permute(0, 3, 1, 2)
            padded = torch.nn.functional.pad(images, (pad, pad, pad, pad)) if pad else images.contiguous()
            self._on_device[key] = (padded.to(device), torch.as_tensor(self.targets, dtype=torch.long).to(device))
        return self._on_device[key]

    def __getstate__(self) -> dict:  # loader workers get the images, not a device copy
        return dict(self.__dict__, _on_device={})


@register_dataset
class CIFAR100InMemory(_InMemory, datasets.CIFAR100):
    """torchvision's CIFAR100 (same arguments), whose training loader ``ttm-distill`` makes on the device."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._set_up_batches()


@register_dataset
class CIFAR10InMemory(_InMemory, datasets.CIFAR10):
    """torchvision's CIFAR10 (same arguments), whose training loader ``ttm-distill`` makes on the device."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._set_up_batches()


class DeviceBatchLoader:
    """The batches of a loader over an in-memory CIFAR dataset, made on ``device``: the loader's sampler, batch size
    and ``drop_last``; yields (images, targets, {}) like torchdistill's training loaders (``supp``), else
    (images, targets)."""

    def __init__(self, dataset: object, memory: _InMemory, subset: torch.Tensor | None, sampler: object,
                 batch_size: int, drop_last: bool, device: torch.device, supp: bool) -> None:
        self.dataset, self.memory, self.subset, self.device, self.supp = dataset, memory, subset, device, supp
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last
        self.batch_sampler = BatchSampler(sampler, batch_size, drop_last)  # torchdistill calls its sampler.set_epoch
        self.images, self.targets = memory.device_tensors(device)
        aug = memory.batch_augment
        self.mean = torch.tensor(aug.mean, device=device) if aug.mean is not None else None
        self.std = torch.tensor(aug.std, device=device) if aug.std is not None else None

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[tuple]:
        order = torch.as_tensor(list(self.sampler), dtype=torch.long)  # the epoch: the sampler's order and shard
        if self.subset is not None:
            order = self.subset[order]
        count = len(order) - (len(order) % self.batch_size if self.drop_last else 0)
        offsets, flips = self.memory.batch_augment.draw(count)
        order, offsets, flips = (t[:count].to(self.device) for t in (order, offsets, flips))
        size = self.memory.batch_augment.size
        for start in range(0, count, self.batch_size):
            part = slice(start, start + self.batch_size)
            images = crop_flip_normalize(self.images, order[part], offsets[part], flips[part], size, self.mean,
                                         self.std)
            targets = self.targets[order[part]]
            yield (images, targets, {}) if self.supp else (images, targets)


def device_batches(loader: object, device: torch.device) -> tuple[object, str | None]:
    """(:class:`DeviceBatchLoader` for ``loader`` when its dataset is an in-memory CIFAR dataset, else ``loader``;
    a note when the dataset is in memory but its batches cannot be made on the device)."""
    dataset, supp, subset = loader.dataset, False, None
    if type(dataset) is BaseDatasetWrapper:
        dataset, supp = dataset.org_dataset, True
    if isinstance(dataset, Subset):
        subset, dataset = torch.as_tensor(list(dataset.indices), dtype=torch.long), dataset.dataset
    if not isinstance(dataset, _InMemory):
        inner = getattr(loader.dataset, 'org_dataset', None)
        if isinstance(inner, _InMemory) or isinstance(getattr(inner, 'dataset', None), _InMemory):
            return loader, (f'{type(inner).__name__} is wrapped in {type(loader.dataset).__name__}: its samples go '
                            'through the per-sample transforms (the same augmentation, not batched on the device)')
        return loader, None
    name = type(dataset).__name__
    if getattr(loader, 'batch_size', None) is None:
        return loader, f'{name}: the loader has a batch_sampler: its samples go through the per-sample transforms'
    if loader.collate_fn is not default_collate:
        return loader, f'{name}: the loader has a collate_fn: its samples go through the per-sample transforms'
    return DeviceBatchLoader(loader.dataset, dataset, subset, loader.sampler, loader.batch_size, loader.drop_last,
                             device, supp), None
