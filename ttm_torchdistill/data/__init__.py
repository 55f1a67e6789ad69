"""Datasets that ship with a package, for the offline demo; DeiT-style training data for recipes."""
from .augment import MixupCutmixCollate, iterations_per_epoch, mixup_cutmix_collate, timm_transform
from .digits import DigitsDataset

__all__ = ['DigitsDataset', 'MixupCutmixCollate', 'iterations_per_epoch', 'mixup_cutmix_collate', 'timm_transform']
