"""TensorBoard curves for `train --tensorboard DIR` and hparams for sweeps (the optional `tensorboard` package)."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import UsageError
from ..formats.metrics import FIELDS

__all__ = ['EpochWriter', 'available', 'require', 'tag', 'write_hparams']

INSTALL = "pip install 'ttm-torchdistill[tensorboard]'"
TAGS = {'train_loss': 'train/loss', 'lr': 'train/lr', 'train_images_per_s': 'train/images_per_s',
        'val_top1': 'val/top1', 'val_top5': 'val/top5'}
"""per-epoch record field -> TensorBoard tag; the loss's diagnostics are ``diagnostics/<name>``"""


def tag(key: str) -> str | None:
    """The TensorBoard tag of a per-epoch record's field or diagnostic (None: not drawn)."""
    return TAGS.get(key) or (None if key in FIELDS else f'diagnostics/{key}')


def available() -> bool:
    """Whether torch's TensorBoard writer can be imported (the tensorboard package is installed and works)."""
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def require(flag: str) -> None:
    """One line (UsageError) naming ``flag`` and how to install TensorBoard, unless it can be imported."""
    if not available():
        raise UsageError(f'{flag}: the tensorboard package is not installed ({INSTALL})')


def _summary_writer(log_dir: str | os.PathLike, flag: str):
    require(flag)
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(Path(log_dir).expanduser()))


class EpochWriter:
    """Writes one point per epoch for each metric of the runner's per-epoch record."""

    def __init__(self, log_dir: str | os.PathLike) -> None:
        self.writer = _summary_writer(log_dir, '--tensorboard')

    def log(self, record: dict) -> None:
        for key, value in record.items():
            if (name := tag(key)) is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(name, value, record['epoch'])
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def write_hparams(log_dir: str | os.PathLike, hparams: dict, metrics: dict) -> None:
    """One hparams session in ``log_dir`` itself, so TensorBoard's HParams view lines it up with the curves."""
    with _summary_writer(log_dir, 'sweep') as writer:
        writer.add_hparams(hparams, metrics, run_name='.')
