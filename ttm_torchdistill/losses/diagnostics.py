"""How a loss reports its own diagnostics: the protocol the runner, TensorBoard and `plot` read, whatever the loss.

A loss term (or a module inside it) that has ``diagnostic_names`` and ``diagnostics()`` reports, after each forward,
one value per name: a batch mean of a part of the loss or of a quantity behind it (TTM's ``u_gamma``, ITRD's
``corr``), as one 1-D tensor on the loss's device, so reading it costs no host synchronisation. The runner averages
them over an epoch into the metrics record (``ttm_torchdistill.formats.metrics``).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor, nn

__all__ = ['ReportsDiagnostics', 'reporters']


@runtime_checkable
class ReportsDiagnostics(Protocol):
    diagnostic_names: tuple[str, ...]
    """what each value of :meth:`diagnostics` is"""

    def diagnostics(self) -> Tensor | None:
        """The last forward's values, in :attr:`diagnostic_names` order (float, on the loss's device); None before
        the first forward."""


def reporters(term: object) -> list[ReportsDiagnostics]:
    """The modules of a loss term (the term itself, or what a loss wrapper holds) that report diagnostics."""
    modules = term.modules() if isinstance(term, nn.Module) else [term]
    return [m for m in modules if isinstance(m, ReportsDiagnostics)]
