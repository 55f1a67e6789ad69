"""DeiT-style training data for recipes: timm's transforms, a Mixup/CutMix collate, and the iterations of an epoch.

* :func:`timm_transform` is ``timm.data.create_transform`` (RandomResizedCrop, flip, RandAugment such as
  ``rand-m9-mstd0.5-inc1``, RandomErasing; or the evaluation resize and centre crop), with one line naming the
  ``timm`` extra when timm is missing. Its AutoAugment / RandAugment / AugMix posterize takes 0 bits as timm means
  it (keep none of the 8: a black image, what Pillow did before it refused bits below 1), see :func:`posterize`.
* :func:`mixup_cutmix_collate` registers a collate function in torchdistill's registry and returns its key, for
  ``train_data_loader.collate_fn`` (torchdistill looks collate functions up by key and passes them no arguments).
  Each batch gets either torchvision's MixUp or its CutMix (v2, equal odds); the labels become label-smoothed
  one-hot targets mixed with the same weights, so teacher and student see the same mixed images and every loss
  gets the mixed soft targets.
* :func:`iterations_per_epoch` counts the training loader's batches for a per-iteration schedule.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sized

import torch
import torch.distributed as dist
from PIL import Image, ImageOps
from torch.nn import functional as F
from torch.utils.data import default_collate
from torchdistill.datasets.registry import COLLATE_FUNC_DICT
from torchvision.transforms import v2

from ..extras import require_timm

__all__ = ['MixupCutmixCollate', 'iterations_per_epoch', 'mixup_cutmix_collate', 'posterize', 'timm_transform']


def posterize(img: Image.Image, bits_to_keep: int, **kwargs) -> Image.Image:
    """timm's posterize op with Pillow's own arithmetic for every bit count timm asks for, 0 included.

    timm's RandAugment (``Posterize`` at magnitude 0, ``PosterizeIncreasing`` at the top magnitude) asks for 0 bits:
    keep none of a channel's 8 bits, so every pixel becomes 0. Pillow computed exactly that until it began to refuse
    bits below 1 (``ValueError: bits must be between or equal to 1 and 8``), which ends a DeiT epoch about once in
    600 images. 1 to 7 bits are Pillow's ``ImageOps.posterize``; 8 or more keep the image, as in timm.
    """
    if bits_to_keep >= 8:
        return img
    if bits_to_keep >= 1:
        return ImageOps.posterize(img, bits_to_keep)
    return img.point([0] * 256 * len(img.getbands()))  # the mask ~(2**8 - 1) keeps no bit of any value


def _augment_ops(transform: object, op_class: type) -> list:
    """timm's AugmentOp objects inside a transform (Compose, RandAugment, AutoAugment policies, AugMix)."""
    found, stack = [], [transform]
    while stack:
        item = stack.pop()
        if isinstance(item, op_class):
            found.append(item)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        else:
            stack.extend(inner for name in ('transforms', 'ops', 'policy')
                         if (inner := getattr(item, name, None)) is not None)
    return found


def timm_transform(**kwargs) -> Callable:
    """``timm.data.create_transform(**kwargs)``, e.g. ``input_size: 224, is_training: True, auto_augment:
    'rand-m9-mstd0.5-inc1', interpolation: 'bicubic', re_prob: 0.25, re_mode: 'pixel'`` (needs the timm extra);
    its posterize op is :func:`posterize`, which takes timm's 0 bits on any Pillow."""
    timm = require_timm('ttm_torchdistill.data.timm_transform')
    transform = timm.data.create_transform(**kwargs)
    auto_augment = timm.data.auto_augment
    for op in _augment_ops(transform, auto_augment.AugmentOp):
        if op.aug_fn is auto_augment.posterize:
            op.aug_fn = posterize
    return transform


def _number(name: str, value: object, low: float, high: float, high_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or value > high or (high_open and value == high):
        raise ValueError(f'{name}={value!r}: expected a number from {low:g} to {high:g}'
                         + (' (excluded)' if high_open else ''))
    return float(value)


class MixupCutmixCollate:
    """``default_collate``, then label-smoothed one-hot targets and one of MixUp / CutMix on the whole batch.

    An alpha of 0 turns that one off (both 0: label smoothing only). Extra items of each sample (torchdistill's
    supplementary dict) are collated and passed on unchanged.
    """

    def __init__(self, num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                 label_smoothing: float = 0.1) -> None:
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
            raise ValueError(f'num_classes={num_classes!r}: expected an integer >= 2')
        self.num_classes = num_classes
        self.mixup_alpha = _number('mixup_alpha', mixup_alpha, 0, math.inf, high_open=True)
        self.cutmix_alpha = _number('cutmix_alpha', cutmix_alpha, 0, math.inf, high_open=True)
        self.label_smoothing = _number('label_smoothing', label_smoothing, 0, 1, high_open=True)
        mixers = ([v2.MixUp(alpha=self.mixup_alpha)] if self.mixup_alpha > 0 else []) + \
                 ([v2.CutMix(alpha=self.cutmix_alpha)] if self.cutmix_alpha > 0 else [])
        self.mix = v2.RandomChoice(mixers) if len(mixers) == 2 else (mixers[0] if mixers else None)

    @property
    def key(self) -> str:
        """The key it is registered under."""
        return (f'mixup_cutmix(num_classes={self.num_classes}, mixup_alpha={self.mixup_alpha:g}, '
                f'cutmix_alpha={self.cutmix_alpha:g}, label_smoothing={self.label_smoothing:g})')

    def soft_targets(self, labels: torch.Tensor) -> torch.Tensor:
        """Class indices -> (1 - eps) one-hot + eps / K (float32)."""
        if labels.ndim != 1 or labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
            raise ValueError(f'{self.key}: expected one class index per sample, got labels of shape '
                             f'{list(labels.shape)} and dtype {labels.dtype}')
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f'{self.key}: a label ({int(labels.max())}) is outside 0 .. {self.num_classes - 1}; '
                             'check num_classes')
        eps = self.label_smoothing
        return F.one_hot(labels.long(), self.num_classes).float() * (1.0 - eps) + eps / self.num_classes

    def __call__(self, batch: list) -> tuple:
        images, labels, *rest = default_collate(batch)
        targets = self.soft_targets(labels)
        if self.mix is not None:
            images, targets = self.mix(images, targets)
        return (images, targets, *rest)


def mixup_cutmix_collate(num_classes: int, mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0,
                         label_smoothing: float = 0.1) -> str:
    """Register a :class:`MixupCutmixCollate` with these settings in torchdistill's collate registry and return
    its key (``'mixup_cutmix(num_classes=1000, mixup_alpha=0.8, cutmix_alpha=1, label_smoothing=0.1)'``), for
    ``collate_fn: !import_call {key: 'ttm_torchdistill.data.mixup_cutmix_collate', init: {kwargs: {...}}}``."""
    collate = MixupCutmixCollate(num_classes, mixup_alpha, cutmix_alpha, label_smoothing)
    COLLATE_FUNC_DICT[collate.key] = collate
    return collate.key


def iterations_per_epoch(dataset: Sized, batch_size: int, drop_last: bool = False) -> int:
    """Batches per epoch of the training loader torchdistill builds for ``dataset`` in this process: the dataset
    is split over the processes of the running job (torch.distributed's world size, 1 without it), as
    DistributedSampler does, then batched. For ``warmup_cosine_lr``'s ``iterations_per_epoch``."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f'batch_size={batch_size!r}: expected an integer >= 1')
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    per_process = math.ceil(len(dataset) / world)
    count = per_process // batch_size if drop_last else math.ceil(per_process / batch_size)
    if count < 1:
        raise ValueError(f'an epoch has 0 iterations: {len(dataset)} samples over {world} process(es) in batches of '
                         f'{batch_size}' + (' with drop_last' if drop_last else ''))
    return count
