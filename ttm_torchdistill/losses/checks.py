"""The one-line checks of a loss's parameters (a ValueError naming the parameter, its value and the accepted range)."""
from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Real

__all__ = ['count', 'number']


def number(name: str, value: object, accepted: str, ok: Callable[[float], bool], owner: str = '') -> float:
    """``value`` as a float, or a ValueError ``[OWNER: ]NAME=VALUE is invalid: accepted range is ACCEPTED``."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or not ok(value):
        prefix = f'{owner}: ' if owner else ''
        raise ValueError(f'{prefix}{name}={value!r} is invalid: accepted range is {accepted}')
    return float(value)


def count(owner: str, name: str, value: object) -> int:
    """``value`` as an integer >= 1, or a ValueError naming ``owner``, the parameter and the value."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{owner}: {name}={value!r} is invalid: accepted values are integers >= 1')
    return value
