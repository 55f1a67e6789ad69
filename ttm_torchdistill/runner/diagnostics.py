"""A run's loss diagnostics per epoch: the parts each loss reports (``ttm_torchdistill.methods.LossHooks``) and, where
the loss has several terms, each term's value; summed on the device at every step, averaged over the epoch and the
processes into the metrics record.

A part keeps its own name (``u_gamma``, ``corr``) unless two terms report the same one, which then become
``<term>.<name>``; a term's value is ``loss.<term>`` (e.g. ``loss.crd``), whatever its class.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..methods import hooked
from .distributed import all_reduce_sum

__all__ = ['EpochDiagnostics']


class EpochDiagnostics:
    """The diagnostics of a box's loss; ``terms``: (term name, term) of its ``term_dict``."""

    def __init__(self, terms: list[tuple[str, object]], device: torch.device) -> None:
        self.device = device
        found = [(name, r) for name, term in terms for r in hooked(term) if r.diagnostic_names]
        counts: dict[str, int] = {}
        for _, reporter in found:
            for part in reporter.diagnostic_names:
                counts[part] = counts.get(part, 0) + 1
        self.reporters = found
        self.keys = [part if counts[part] == 1 else f'{name}.{part}'
                     for name, reporter in found for part in reporter.diagnostic_names]
        self._terms: list[str] = []
        self._values: dict[str, Tensor] = {}
        self._hooks = []
        modules = [(name, term) for name, term in terms if isinstance(term, nn.Module)]
        if len(modules) > 1:  # a single term's value is the train loss itself
            for name, term in modules:
                self._terms.append(name)
                self._hooks.append(term.register_forward_hook(self._keeper(name)))
            self.keys += [f'loss.{name}' for name in self._terms]
        self._sum = torch.zeros(len(self.keys), dtype=torch.float64, device=device)

    def _keeper(self, name: str):
        def keep(module: nn.Module, args: tuple, output: object) -> None:
            if isinstance(output, Tensor):
                self._values[name] = output.detach().float().mean()
        return keep

    def start_epoch(self) -> None:
        self._sum.zero_()

    def step(self) -> None:
        """Add the last step's values (on the device: no host synchronisation)."""
        if not self.keys:
            return
        parts = []
        for _, reporter in self.reporters:
            values = reporter.diagnostics()
            parts.append(values.detach().to(self.device, torch.float64) if values is not None else torch.full(
                (len(reporter.diagnostic_names),), math.nan, dtype=torch.float64, device=self.device))
        nan = torch.tensor(math.nan, device=self.device)
        if self._terms:
            parts.append(torch.stack([self._values.get(name, nan) for name in self._terms]).double())
        self._sum += torch.cat(parts)

    def sum(self) -> torch.Tensor:
        """The epoch's sums so far (on the CPU), for a mid-epoch checkpoint."""
        return self._sum.cpu().clone()

    def load_sum(self, saved: torch.Tensor) -> None:
        self._sum.copy_(saved)

    def epoch_means(self, steps: int, world_size: int) -> dict[str, float]:
        """The epoch's mean of each diagnostic over ``steps`` steps in each of ``world_size`` processes."""
        if not self.keys:
            return {}
        means = all_reduce_sum(self._sum.clone()).div_(steps * world_size).tolist()
        return dict(zip(self.keys, means, strict=True))

    def close(self) -> None:
        for hook in self._hooks:
            hook.remove()
