"""Datasets that ship with a package, for the offline demo; DeiT-style training data; CIFAR in memory for recipes."""
from .augment import MixupCutmixCollate, iterations_per_epoch, mixup_cutmix_collate, timm_transform
from .cifar_memory import CIFAR10InMemory, CIFAR100InMemory, device_batches
from .digits import DigitsDataset

__all__ = ['CIFAR10InMemory', 'CIFAR100InMemory', 'DigitsDataset', 'MixupCutmixCollate', 'device_batches',
           'iterations_per_epoch', 'mixup_cutmix_collate', 'timm_transform']
