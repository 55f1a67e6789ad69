"""Optimizer and learning-rate schedule keys for vision-transformer recipes, in torchdistill's registries.

* ``adamw_no_decay_norm_bias_tokens`` (optimizer): torch's AdamW with two parameter groups; no weight decay on
  normalisation layers, biases, class/distillation/register tokens and position embeddings, the recipe's
  ``weight_decay`` on everything else. It needs the model, not a flat parameter list, so the recipe sets
  ``train.optimizer.filters_params: False`` (torchdistill then passes the module; frozen parameters are left out
  here). Given a flat list instead, it can only go by shape (no decay on parameters with at most one dimension).
* ``warmup_cosine_lr`` (scheduler, stepped every iteration with ``scheduling_step: 1``): a linear warm-up from
  ``warmup_start_factor`` x lr to lr over ``warmup_epochs``, then cosine annealing to ``eta_min`` at the end of
  ``num_epochs``; torch's LinearLR and CosineAnnealingLR in a SequentialLR, given ``iterations_per_epoch`` (see
  :func:`ttm_torchdistill.data.iterations_per_epoch`, which counts them for a recipe).
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR
from torchdistill.optim.registry import register_optimizer, register_scheduler

__all__ = ['TOKEN_NAMES', 'adamw_no_decay_norm_bias_tokens', 'no_decay_names', 'param_groups', 'warmup_cosine_lr']

TOKEN_NAMES = frozenset({'cls_token', 'dist_token', 'reg_token', 'pos_embed'})
"""parameter names (last part) that are tokens or position embeddings; a timm model's ``no_weight_decay()`` adds
its own"""


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.LayerNorm,
                               nn.GroupNorm, nn.RMSNorm, nn.LocalResponseNorm)) or 'Norm' in type(module).__name__


def _declared_no_decay(model: nn.Module) -> set[int]:
    """Parameters that a module declares through timm's ``no_weight_decay()`` (names relative to that module)."""
    found = set()
    for module in model.modules():
        declare = getattr(module, 'no_weight_decay', None)
        if not callable(declare):
            continue
        for name in declare():
            try:
                found.add(id(module.get_parameter(name)))
            except AttributeError:  # e.g. dist_token on a model without one
                continue
    return found


def _split(model: nn.Module) -> tuple[list[tuple[str, nn.Parameter]], list[tuple[str, nn.Parameter]]]:
    """(decayed, not decayed) trainable parameters of ``model`` with their names, each parameter once."""
    declared = _declared_no_decay(model)
    decay, no_decay, seen = [], [], set()
    for module_name, module in model.named_modules():
        norm = _is_norm(module)
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen or not param.requires_grad:
                continue
            seen.add(id(param))
            full = f'{module_name}.{name}' if module_name else name
            skip = norm or name == 'bias' or name in TOKEN_NAMES or id(param) in declared
            (no_decay if skip else decay).append((full, param))
    return decay, no_decay


def no_decay_names(model: nn.Module) -> list[str]:
    """Names of the trainable parameters of ``model`` that get no weight decay, in model order."""
    return [name for name, _ in _split(model)[1]]


def param_groups(model: nn.Module | Iterable[torch.Tensor], weight_decay: float) -> list[dict]:
    """Two AdamW/SGD parameter groups: ``weight_decay`` on weights, 0 on norms, biases and tokens (see the module's
    docstring); a flat iterable of parameters is split by shape (at most one dimension: no decay). Empty groups are
    left out."""
    if isinstance(model, nn.Module):
        decay, no_decay = ([p for _, p in group] for group in _split(model))
    else:
        params = [p for p in model if p.requires_grad]
        decay, no_decay = [p for p in params if p.ndim > 1], [p for p in params if p.ndim <= 1]
    groups = [{'params': decay, 'weight_decay': weight_decay}, {'params': no_decay, 'weight_decay': 0.0}]
    return [group for group in groups if group['params']]


@register_optimizer
def adamw_no_decay_norm_bias_tokens(model: nn.Module | Iterable[torch.Tensor], lr: float = 1e-3,
                                    weight_decay: float = 0.05, betas: tuple[float, float] = (0.9, 0.999),
                                    eps: float = 1e-8, **kwargs) -> torch.optim.AdamW:
    """torch.optim.AdamW over :func:`param_groups` (``key: 'adamw_no_decay_norm_bias_tokens'`` in a recipe, with
    ``filters_params: False``)."""
    if not isinstance(weight_decay, (int, float)) or isinstance(weight_decay, bool) or weight_decay < 0:
        raise ValueError(f'weight_decay={weight_decay!r}: expected a number >= 0')
    if not isinstance(betas, (list, tuple)) or len(betas) != 2:
        raise ValueError(f'betas={betas!r}: expected two numbers, e.g. [0.9, 0.999]')
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas), eps=eps, **kwargs)


def _check(name: str, value: object, low: float, integer: bool = False, above: bool = False) -> None:
    number = isinstance(value, int) if integer else isinstance(value, (int, float)) and math.isfinite(value)
    if isinstance(value, bool) or not number or value < low or (above and value == low):
        kind = 'an integer' if integer else 'a number'
        raise ValueError(f'{name}={value!r}: expected {kind} {">" if above else ">="} {low:g}')


@register_scheduler
def warmup_cosine_lr(optimizer: torch.optim.Optimizer, iterations_per_epoch: int, num_epochs: int,
                     warmup_epochs: float = 0, warmup_start_factor: float = 1e-3, eta_min: float = 0.0) -> LRScheduler:
    """Linear warm-up, then cosine annealing, counted in iterations (``key: 'warmup_cosine_lr'``, ``scheduling_step:
    1``). Iteration k of the warm-up (W iterations) uses lr x (s + (1 - s) k / W); iteration W + j of the rest (C
    iterations) uses eta_min + (lr - eta_min) (1 + cos(pi j / C)) / 2."""
    _check('iterations_per_epoch', iterations_per_epoch, 1, integer=True)
    _check('num_epochs', num_epochs, 1, integer=True)
    _check('warmup_epochs', warmup_epochs, 0)
    _check('warmup_start_factor', warmup_start_factor, 0, above=True)
    _check('eta_min', eta_min, 0)
    if warmup_start_factor > 1:
        raise ValueError(f'warmup_start_factor={warmup_start_factor!r}: expected a number > 0 and <= 1')
    total = num_epochs * iterations_per_epoch
    warmup = round(warmup_epochs * iterations_per_epoch)
    if warmup >= total:
        raise ValueError(f'warmup_epochs={warmup_epochs!r} leaves no iterations for the cosine part of '
                         f'num_epochs={num_epochs!r}: expected fewer warm-up epochs than epochs')
    cosine = CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=eta_min)
    if warmup == 0:
        return cosine
    linear = LinearLR(optimizer, start_factor=warmup_start_factor, end_factor=1.0, total_iters=warmup)
    return SequentialLR(optimizer, [linear, cosine], milestones=[warmup])
