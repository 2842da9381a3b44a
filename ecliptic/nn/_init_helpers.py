"""Parameter dtypes and PyTorch-style initialisation, shared by the layer families."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def default_floating_dtype() -> Any:
    """float64 when x64 mode is on, else float32 (what `jnp.zeros(())` would give)."""
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32  # type: ignore[attr-defined]


def resolve_dtype(dtype: Any, name: str = "dtype") -> Any:
    """``dtype`` or the default floating dtype; rejects non-floating dtypes clearly."""
    if dtype is None:
        return default_floating_dtype()
    try:
        resolved = jnp.dtype(dtype)
    except TypeError as e:
        raise TypeError(f"{name} must be a JAX dtype such as jnp.float32; got {dtype!r}.") from e
    if not jnp.issubdtype(resolved, jnp.inexact):
        raise TypeError(f"{name} must be a floating-point or complex dtype; got {resolved}.")
    return resolved


def uniform_init(key: Any, shape: Sequence[int], dtype: Any, bound: float) -> jax.Array:
    """Samples from U(-bound, bound): PyTorch's default for weights and biases
    (``bound = 1/sqrt(fan_in)``)."""
    if jnp.issubdtype(dtype, jnp.complexfloating):
        real_dtype = jnp.finfo(dtype).dtype
        rkey, ikey = jax.random.split(key)
        real = jax.random.uniform(rkey, shape, real_dtype, -bound, bound)
        imag = jax.random.uniform(ikey, shape, real_dtype, -bound, bound)
        return jax.lax.complex(real, imag).astype(dtype)
    return jax.random.uniform(key, shape, dtype, minval=-bound, maxval=bound)


def fan_in_bound(fan_in: int) -> float:
    """``1/sqrt(fan_in)``, or 0 for an empty fan-in (as PyTorch does)."""
    return 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0


HALF_DTYPES = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))


def compute_dtype(dtype: Any) -> Any:
    """The dtype to do numerically delicate maths in (norms, softmax, trigonometry):
    float32 for float16/bfloat16, whose few mantissa bits lose too much in sums of
    squares and exponentials; otherwise ``dtype`` unchanged."""
    dtype = jnp.dtype(dtype)
    if dtype in HALF_DTYPES:
        return jnp.dtype(jnp.float32)
    return dtype


def filled(shape: Sequence[int], value: float, dtype: Any) -> jax.Array:
    """An array of ``shape`` filled with ``value`` (ones/zeros parameter init), built on
    the host and transferred: unlike ``jnp.full`` this compiles no XLA program for each
    new shape, which keeps building a model fast."""
    return jax.device_put(np.full(tuple(shape), value, dtype=jnp.dtype(dtype)))
