"""matplotlib, an optional extra, for the tools that draw figures."""
from __future__ import annotations

from types import ModuleType

__all__ = ['pyplot']


def pyplot() -> ModuleType | None:
    """``matplotlib.pyplot`` on the file-only Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    return plt
