"""Type checks for configuration values (sizes, counts, rates) used across the package.

`bool` is a subclass of `int` in Python, so `isinstance(True, int)` holds; a size given
as `True` is almost always a mistake, and these checks refuse it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def is_int(x: Any) -> bool:
    """Whether `x` is an integer (Python or NumPy) and not a bool.

    **Arguments:**

    - `x`: any value.

    **Returns:** `True` for `3` or `np.int32(3)`, `False` for `True`, `3.0` or arrays.
    """
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def is_real(x: Any) -> bool:
    """Whether `x` is a real number (Python or NumPy integer or float) and not a bool.

    **Arguments:**

    - `x`: any value.

    **Returns:** `True` for `0.5`, `2` or `np.float32(0.5)`; `False` for `True`,
    complex numbers or arrays.
    """
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(
        x, (bool, np.bool_)
    )
