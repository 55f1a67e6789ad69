"""Datasets that ship with a package, for the offline demo."""
from .digits import DigitsDataset

__all__ = ['DigitsDataset']
