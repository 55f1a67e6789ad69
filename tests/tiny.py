"""Test-only plugin, imported by test recipes through `dependencies` (tests/ is on PYTHONPATH).

It uses torchdistill's own extension points: a registered model, a registered post-epoch
process, and a dataset class built by the recipe's !import_call.
"""
import os
import signal
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset, get_worker_info
from torchdistill.core.interfaces.post_epoch_proc import default_post_epoch_process_with_teacher
from torchdistill.core.interfaces.post_forward_proc import default_post_forward_process
from torchdistill.core.interfaces.registry import register_post_epoch_proc_func, register_post_forward_proc_func
from torchdistill.losses.registry import register_mid_level_loss
from torchdistill.models.registry import register_model


class EvalBatchLimit(nn.Module):
    """Passes its input on; in eval mode, raises torch's out-of-memory error for a batch above ``limit`` images (a
    stand-in for a validation batch that does not fit on the GPU)."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit

    def forward(self, x):
        if not self.training and len(x) > self.limit:
            raise torch.OutOfMemoryError(f'out of memory (a stand-in: {len(x)} images, room for {self.limit})')
        return x


@register_model
def tiny_cnn(num_classes=4, batch_norm=False, norm_head=False, eval_batch_limit=None, **kwargs):
    """A small CNN; without batch-norm, a 2-process step equals a 1-process step on the same global batch.
    ``norm_head``: batch norm on the pooled features (one value per channel: a batch of one sample is refused);
    ``eval_batch_limit``: see :class:`EvalBatchLimit`."""
    layers = [nn.Conv2d(3, 8, 3, 2, 1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(8))
    layers += [nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten()]
    layers += [nn.BatchNorm1d(32)] if norm_head else []
    layers += [nn.Linear(32, num_classes)]
    return nn.Sequential(*layers, *([EvalBatchLimit(eval_batch_limit)] if eval_batch_limit else []))


class Blobs(Dataset):
    """Deterministic learnable images: class c has a bright channel c % 3 plus fixed noise."""

    def __init__(self, size=32, num_classes=4, image_size=16, seed=0, nan_from=None, nan_at=(), kill_at=None,
                 delay=0.0):
        g = torch.Generator().manual_seed(seed)
        self.targets = torch.arange(size) % num_classes
        self.images = 0.5 * torch.randn(size, 3, image_size, image_size, generator=g)
        for i, c in enumerate(self.targets.tolist()):
            self.images[i, c % 3] += 1.0 + c // 3
        self.nan_from, self.nan_at = nan_from, set(nan_at or ())
        self.kill_at = int(os.environ.get('TINY_KILL_AT', 0)) if kill_at is None else kill_at
        self.signal_at = int(os.environ.get('TINY_SIGNAL_AT', 0))
        self.calls = 0
        self.delay = delay  # seconds per sample: keeps a run alive long enough for concurrency tests

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        self.calls += 1
        if self.kill_at and self.calls == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        rank, size = os.environ.get('TINY_SIGNAL_RANK'), os.environ.get('TINY_SIGNAL_SIZE')
        if (self.signal_at == self.calls and rank in (None, os.environ.get('RANK', '0'))
                and size in (None, str(len(self)))):  # SLURM's warning, at a given sample of one dataset
            os.kill(os.getpid() if get_worker_info() is None else os.getppid(), signal.SIGUSR2)
        time.sleep(self.delay)
        image = self.images[index]
        if (self.nan_from is not None and index >= self.nan_from) or index in self.nan_at:
            image = torch.full_like(image, float('nan'))
        return image, int(self.targets[index])


@register_post_epoch_proc_func
def save_student_per_rank(self, metrics=None, **kwargs):
    """torchdistill's default post-epoch process, then this rank's student weights to $TINY_RANK_DIR."""
    default_post_epoch_process_with_teacher(self, metrics=metrics, **kwargs)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    model = self.student_model.module if hasattr(self.student_model, 'module') else self.student_model
    out = Path(os.environ['TINY_RANK_DIR'])
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / f'rank{rank}.pt')


@register_post_forward_proc_func
def post_forward_process_of_its_own(self, loss, metrics=None, **kwargs):
    """A recipe's own post-forward process (here: torchdistill's default under another name)."""
    default_post_forward_process(self, loss, metrics=metrics, **kwargs)


@register_model
def scaled_identity(factor=1.0, **kwargs):
    """A 'teacher' whose logits are its input times ``factor``: over-confident by ``factor`` on LogitData."""
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer('factor', torch.tensor(float(factor)))

        def forward(self, x):
            return x * self.factor

    return Scale()


class LogitData(Dataset):
    """Calibrated logits as inputs: labels are drawn from softmax(logits)."""

    def __init__(self, size=20000, num_classes=10, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.logits = 2.0 * torch.randn(size, num_classes, generator=g)
        self.targets = torch.multinomial(torch.softmax(self.logits, 1), 1, generator=g).squeeze(1)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        return self.logits[index], int(self.targets[index])


@register_mid_level_loss
class FailAtCall(nn.Module):
    """The student's cross entropy, until its ``fail_at``-th call, which raises ValueError (a loss that cannot take
    some batch of a real run)."""

    def __init__(self, fail_at=3, **kwargs):
        super().__init__()
        self.fail_at, self.calls = fail_at, 0

    def forward(self, student_io_dict, teacher_io_dict, targets, *args, **kwargs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise ValueError(f'cannot take call {self.calls}')
        return nn.functional.cross_entropy(student_io_dict['.']['output'], targets)
