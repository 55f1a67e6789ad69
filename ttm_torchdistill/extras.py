"""Optional dependencies (pip extras): import one, or fail with one line naming the extra that installs it.

timm is such an extra (``pip install 'ttm-torchdistill[timm]'``): the package imports without it, and only
the parts that build timm models or transforms import it, through :func:`require_timm`.
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ['TIMM_INSTALL', 'MissingExtra', 'require', 'require_timm']

TIMM_INSTALL = "pip install 'ttm-torchdistill[timm]'"


class MissingExtra(ImportError, ValueError):
    """An optional package is not installed. Also a ValueError, so every place that reports a recipe part's
    bad value in one line (model building, dataset building, YAML loading) reports this in one line too."""


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module``; if it is missing, raise :class:`MissingExtra` saying that ``what`` needs it and which
    extra installs it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and exc.name.split('.')[0] != module.split('.')[0]:
            raise  # the package is there but one of its own dependencies is broken: keep the real error
        raise MissingExtra(f"{what} needs the {module.split('.')[0]} package, which is not installed: "
                           f"pip install 'ttm-torchdistill[{extra}]'") from None


def require_timm(what: str) -> ModuleType:
    """timm (and its ``timm.data`` and ``timm.models`` submodules, imported), or :class:`MissingExtra`."""
    timm = require('timm', 'timm', what)
    importlib.import_module('timm.data')
    importlib.import_module('timm.models')
    return timm
