"""Type checks for configuration values (sizes, counts, rates) used across the package.

`bool` is a subclass of `int` in Python, so `isinstance(True, int)` holds; a size given
as `True` is almost always a mistake, and these checks refuse it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._messages import short_repr


def is_int(x: Any) -> bool:
    """Whether `x` is a Python or NumPy integer and not a bool (`3`, not `True` or `3.0`)."""
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def is_real(x: Any) -> bool:
    """Whether `x` is a Python or NumPy int or float, not a bool (nor complex, nor an array)."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(
        x, (bool, np.bool_)
    )


def check_callable(value: Any, what: str) -> None:
    """Raise ``TypeError("{what} must be callable; got ...")`` unless `value` is callable."""
    if not callable(value):
        raise TypeError(f"{what} must be callable; got {short_repr(value)}.")
