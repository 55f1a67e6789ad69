"""scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 10 classes) as a torch dataset."""
from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ['DigitsDataset', 'SPLITS']

# Fixed, class-stratified split of the 1,797 images: 60% train, 20% validation, 20% test.
SPLITS = {'train': (0.0, 0.6), 'val': (0.6, 0.8), 'test': (0.8, 1.0)}
_SPLIT_SEED = 20240211


def _split_indices(targets: Tensor, split: str) -> Tensor:
    lo, hi = SPLITS[split]
    g = torch.Generator().manual_seed(_SPLIT_SEED)
    chosen = []
    for c in range(int(targets.max()) + 1):
        idx = (targets == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        chosen.append(idx[round(lo * len(idx)):round(hi * len(idx))])
    return torch.cat(chosen).sort().values


class DigitsDataset(Dataset):
    """One split of the digits: (1x8x8 float image in [0, 1], label) pairs; no download.

    :param split: 'train', 'val' or 'test' (fixed, stratified 60/20/20).
    :param transform: optional callable applied to each image tensor.
    """

    def __init__(self, split: str = 'train', transform=None) -> None:
        if split not in SPLITS:
            raise ValueError(f'split={split!r} is invalid: accepted values are {", ".join(SPLITS)}')
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise ImportError("DigitsDataset needs scikit-learn: pip install 'ttm-torchdistill[demo]'") from None
        digits = load_digits()
        images = torch.as_tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        targets = torch.as_tensor(digits.target, dtype=torch.long)
        index = _split_indices(targets, split)
        self.images, self.targets = images[index], targets[index]
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])
