"""Atomic checkpoint files and the RNG state a resumed run needs."""
from __future__ import annotations

import glob
import os
import pickle
import random
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import UsageError, one_line
from ..outputs import atomic_write

__all__ = ['atomic_save', 'last_ckpt_path', 'load_checkpoint', 'load_model_state', 'model_state',
           'remove_stale_temporaries', 'rng_state', 'set_rng_state']


def last_ckpt_path(dst_ckpt: str | os.PathLike) -> Path:
    """The resumable per-epoch checkpoint beside the best one: ``x.pt`` -> ``x.last.pt``."""
    path = Path(dst_ckpt)
    return path.with_name(path.stem + '.last' + path.suffix)


def atomic_save(obj: object, path: str | os.PathLike) -> None:
    """torch.save through :func:`ttm_torchdistill.outputs.atomic_write`: a kill at any moment leaves either the
    previous file or the new one, never a torn one."""
    atomic_write(path, lambda f: torch.save(obj, f))


def rng_state(device: torch.device) -> dict:
    """This process's random number generator states (torch, Python, NumPy, and its own CUDA device's)."""
    return {
        'torch': torch.get_rng_state(),
        'cuda': [torch.cuda.get_rng_state(device)] if device.type == 'cuda' else [],
        'python': random.getstate(),
        'numpy': np.random.get_state(),
    }


def set_rng_state(state: dict, device: torch.device) -> None:
    """Restore :func:`rng_state`; the CUDA state goes to ``device`` whatever GPUs are visible now (a checkpoint of
    an older version holds one state per visible GPU: the one of this device's index, else the first)."""
    torch.set_rng_state(state['torch'])
    cuda = state['cuda']
    if cuda and device.type == 'cuda':
        index = device.index or 0
        torch.cuda.set_rng_state(cuda[index] if len(cuda) > 1 and index < len(cuda) else cuda[0], device)
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])


def load_checkpoint(path: str | os.PathLike, what: str) -> object:
    """torch.load ``path`` on the CPU; a missing, truncated or corrupt file is one UsageError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f'{what}: no checkpoint file at {path}')
    try:
        return torch.load(path, map_location='cpu', weights_only=False)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, KeyError,
            IndexError, AttributeError, ImportError, UnicodeDecodeError,
            MemoryError, OverflowError, TypeError) as exc:  # what unpickling random bytes raises: a length too big
        # to allocate or represent, an opcode's argument of the wrong type
        raise UsageError(f'{what}: checkpoint {path} is unreadable (truncated or corrupt: '
                         f'{type(exc).__name__}: {one_line(exc)[:200]}); it was left as it is') from None


def model_state(ckpt: object) -> object:
    """The model state dict of a checkpoint: its 'model' entry, or the checkpoint itself (a bare state dict)."""
    return ckpt['model'] if isinstance(ckpt, Mapping) and 'model' in ckpt else ckpt


def load_model_state(model: nn.Module, state: object, path: str | os.PathLike, model_name: str) -> None:
    """``model.load_state_dict(state)`` after checking that every key and shape matches.

    A state dict of another architecture is one UsageError: how many keys differ and the first few.
    """
    if not isinstance(state, Mapping) or not all(isinstance(k, str) for k in state):
        raise UsageError(f'checkpoint {path} holds no model state dict (for {model_name})')
    if state and all(k.startswith('module.') for k in state):  # saved from a DDP-wrapped model
        state = {k[len('module.'):]: v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and isinstance(state[k], torch.Tensor)
              and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        first = ([f'missing {k}' for k in missing[:2]] + [f'unexpected {k}' for k in unexpected[:2]]
                 + [f'{k} {list(state[k].shape)} vs {list(own[k].shape)}' for k in shapes[:2]])
        raise UsageError(f'checkpoint {path} was written for another model (not {model_name}): {len(missing)} keys '
                         f'missing, {len(unexpected)} unexpected, {len(shapes)} shape mismatches; '
                         f'first: {", ".join(first)}')
    model.load_state_dict(state)


def remove_stale_temporaries(*paths: Path) -> list[Path]:
    """Delete the ``<name>.*.tmp`` files an interrupted atomic_save left beside each of ``paths``.

    Only the holder of the run's lock may call this: nobody else is writing these files then.
    """
    removed = []
    for path in paths:
        for tmp in path.parent.glob(glob.escape(path.name) + '.*.tmp'):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
