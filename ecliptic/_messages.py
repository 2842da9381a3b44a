"""How values are described in error messages: short type names, cut reprs, and
`f32[3,4]`-style summaries of arrays. The one place for these, so every message of the
package describes a value the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

_SHORT_DTYPES = (("bfloat", "bf"), ("float", "f"), ("uint", "u"), ("int", "i"), ("complex", "c"))


def type_name(x: Any) -> str:
    """A short name of `x`'s type for messages: `int`, `jax.Array`, module kept unless built-in."""
    kind = type(x)
    module = kind.__module__
    if module in ("builtins", "__main__"):
        return kind.__qualname__
    return f"{module}.{kind.__qualname__}"


def short_repr(x: Any, limit: int = 80) -> str:
    """`repr(x)` cut to `limit` characters; a failing `__repr__` gives the type name instead."""
    try:
        text = repr(x)
    except Exception:  # a broken __repr__ must not hide the real error
        text = f"<{type_name(x)} object>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_dtype(name: str) -> str:
    """A short dtype name: `float32` -> `f32`, `bfloat16` -> `bf16` (`key<fry>` kept)."""
    for long, short in _SHORT_DTYPES:
        if name.startswith(long):
            return short + name[len(long) :]
    return name


def array_text(dtype: Any, shape: Sequence[int]) -> str:
    """`f32[3,4]`-style summary of a dtype (NumPy or a JAX PRNG key dtype) and a shape."""
    try:
        np_dtype = np.dtype(dtype)
    except TypeError:  # extended dtypes such as PRNG keys
        name = str(dtype)
    else:
        name = f"V{np_dtype.itemsize}" if np_dtype.type is np.void else np_dtype.name
    return f"{short_dtype(name)}[{','.join(str(int(d)) for d in shape)}]"


def describe(x: Any) -> str:
    """`f32[3,4]`-style summary of an array, or a short repr of anything else."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return array_text(x.dtype, x.shape)
    return short_repr(x)
