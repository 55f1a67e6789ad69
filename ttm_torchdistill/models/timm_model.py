"""Any timm model by name in a recipe, registered as ``timm_model``; nothing is downloaded unless asked for.

In a recipe (``pip install 'ttm-torchdistill[timm]'``)::

    teacher_model:
      key: 'timm_model'
      kwargs:
        name: 'deit3_small_patch16_224.fb_in22k_ft_in1k'   # a timm name, with or without a pretrained tag
        pretrained: True      # timm's released weights (Hugging Face Hub, or its local cache); False: random init
        checkpoint: null      # or a local weights file, loaded strictly; then nothing is downloaded
        num_classes: 1000
        drop_path_rate: 0.0   # stochastic depth (optional)
        img_size: 224         # any other kwarg goes to timm.create_model

A ``checkpoint`` may be in timm's formats (a bare state dict in ``.pth``/``.bin`` or ``.safetensors``, or a dict
with ``state_dict``/``state_dict_ema``/``model``, EMA weights preferred, as timm does) or torchdistill's
(``load_ckpt``: a dict with ``model``, e.g. a ``ttm-distill train`` checkpoint); a ``module.`` prefix left by
DistributedDataParallel is removed. Checkpoints are pickles: load only files you trust, as with recipes.
"""
from __future__ import annotations

import difflib
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchdistill.models.registry import register_model

from ..extras import require_timm

__all__ = ['load_weights', 'timm_model', 'weights_unavailable']

PROXIES = ('HTTPS_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy')
"""with a proxy, whether the Hub answers is the proxy's business: timm is left to try"""


def _one_line(exc: BaseException, limit: int = 300) -> str:
    return ' '.join(str(exc).split())[:limit]


def _check_name(timm, name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f'timm_model: name={name!r}: expected the name of a timm model, e.g. '
                         "'deit_tiny_patch16_224'")
    if not timm.is_model(name):
        close = difflib.get_close_matches(name.split('.')[0], timm.list_models(), n=3)
        hint = f'; did you mean {", ".join(close)}?' if close else ' (see timm.list_models())'
        raise ValueError(f'timm_model: {name!r} is not a timm model{hint}')
    return name


@register_model
def timm_model(name: str, pretrained: bool = False, num_classes: int | None = None,
               drop_path_rate: float | None = None, checkpoint: str | None = None, **kwargs) -> nn.Module:
    """``timm.create_model(name, ...)``. ``pretrained`` False never downloads; with a ``checkpoint`` file nothing is
    downloaded either and the file's weights are loaded strictly. Other kwargs with a value go to timm (a null one
    means timm's default)."""
    timm = require_timm(f'timm_model {name!r}')
    _check_name(timm, name)
    if not isinstance(pretrained, bool):
        raise ValueError(f'timm_model {name!r}: pretrained={pretrained!r}: expected true or false')
    options = {key: value for key, value in kwargs.items() if value is not None}
    if num_classes is not None:
        options['num_classes'] = num_classes
    if drop_path_rate is not None:
        options['drop_path_rate'] = drop_path_rate
    download = pretrained and not checkpoint
    why = weights_unavailable(timm, name) if download else None
    if why is not None:  # at once: not after a minute of Hub retries and their warnings
        raise OSError(_offline_message(name, why))
    try:
        model = timm.create_model(name, pretrained=download, **options)
    except OSError as exc:  # huggingface_hub's errors when the Hub does not answer or lacks the file
        if not download:
            raise
        raise OSError(_offline_message(name, f'{type(exc).__name__}: {_one_line(exc, 120)}')) from None
    if checkpoint:
        load_weights(model, checkpoint, f'timm_model {name!r}')
    return model


def _offline_message(name: str, why: str) -> str:
    repo = f'models--timm--{name}'
    return (f"timm_model {name!r}: cannot get timm's pretrained weights ({why}): give a weights file as "
            'kwargs.checkpoint (e.g. --set models.teacher_model.kwargs.checkpoint=PATH), or copy the Hub cache folder '
            f'{repo} into ~/.cache/huggingface/hub/ and set HF_HUB_OFFLINE=1 (docs/recipes/deit.md, "The teacher\'s '
            'weights, offline")')


def weights_unavailable(timm, name: str) -> str | None:
    """Why timm could not get ``name``'s pretrained weights here (not in the Hugging Face or torch hub cache, and
    the Hub offline or unreachable), or None (cached, reachable, or behind a proxy: timm tries)."""
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import constants, try_to_load_from_cache

        repo, _, revision = cfg.hf_hub_id.partition('@')
        files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ['model.safetensors', 'pytorch_model.bin']
        if any(isinstance(try_to_load_from_cache(repo, f, revision=revision or None), str) for f in files):
            return None
        if constants.HF_HUB_OFFLINE:
            return f'HF_HUB_OFFLINE is set and {repo} is not in the Hub cache {constants.HF_HUB_CACHE}'
        host = urlparse(constants.ENDPOINT).hostname
    elif cfg.url:
        if (Path(torch.hub.get_dir()) / 'checkpoints' / os.path.basename(urlparse(cfg.url).path)).is_file():
            return None
        host = urlparse(cfg.url).hostname
    else:
        return None
    if any(os.environ.get(proxy) for proxy in PROXIES) or not host:
        return None
    try:
        socket.create_connection((host, 443), timeout=5).close()
    except OSError as exc:
        return f'not in the local cache, and {host} cannot be reached: {exc.strerror or _one_line(exc, 80)}'
    return None


def load_weights(model: nn.Module, checkpoint: str | Path, label: str) -> None:
    """Load a weights file (timm's or torchdistill's formats, see the module's docstring) into ``model`` strictly:
    every key and shape must match; otherwise one ValueError line says how many differ and the first few."""
    timm = require_timm(label)
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise ValueError(f'{label}: checkpoint {str(checkpoint)!r}: no such file')
    try:
        state = timm.models.load_state_dict(str(path), use_ema=True, weights_only=False)
    except Exception as exc:  # torch.load and safetensors raise many kinds of error for a bad file
        raise ValueError(f'{label}: checkpoint {path} is unreadable ({type(exc).__name__}: '
                         f'{_one_line(exc, 200)})') from None
    if not isinstance(state, dict) or not all(isinstance(key, str) for key in state):
        raise ValueError(f'{label}: checkpoint {path} holds no state dict')
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    shapes = [key for key in own if key in state and hasattr(state[key], 'shape')
              and tuple(state[key].shape) != tuple(own[key].shape)]
    if missing or unexpected or shapes:
        first = ([f'missing {key}' for key in missing[:2]] + [f'unexpected {key}' for key in unexpected[:2]]
                 + [f'{key} {list(state[key].shape)} vs {list(own[key].shape)}' for key in shapes[:2]])
        raise ValueError(f'{label}: checkpoint {path} does not fit the model: {len(missing)} keys missing, '
                         f'{len(unexpected)} unexpected, {len(shapes)} shape mismatches; first: {", ".join(first)}')
    model.load_state_dict(state, strict=True)
