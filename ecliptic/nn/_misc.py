"""Helpers shared by the layer families: dtypes, PyTorch-style initialisation, argument checks."""

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


class MissingKeyError(ValueError, RuntimeError):
    """A random layer called in training mode without a PRNG key: a ValueError, and a
    RuntimeError as Equinox raises (so that code catching either keeps working)."""


def check_key(key: Any, layer: str, *, required: bool = True) -> None:
    """Raise a clear error unless `key` is one JAX PRNG key (not a batch of them).

    Used by every layer that takes a key, when it is built and when it is called.

    **Arguments:** `key`, the value given; `layer`, the name used in the message;
    `required`: whether `None` is an error (otherwise it is accepted: the caller decides
    whether randomness is needed).
    """
    if key is None:
        if not required:
            return
        raise TypeError(
            f"{layer} needs a PRNG key to initialise its parameters: pass key=jax.random.key(0)."
        )
    if not (isinstance(key, (jax.Array, np.ndarray))):
        raise TypeError(f"{layer}: key must be a JAX PRNG key; got {type(key).__name__}.")
    shape = tuple(key.shape)
    if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        one_key_shape: tuple[int, ...] = ()
    elif key.dtype == np.uint32 and key.ndim >= 1 and shape[-1] in (2, 4):
        # Raw keys from jax.random.PRNGKey: uint32 arrays of shape (2,) (or (4,) for "rbg").
        one_key_shape = shape[-1:]
    else:
        raise TypeError(
            f"{layer}: key must be a JAX PRNG key such as jax.random.key(0); got an array of "
            f"dtype {key.dtype} and shape {shape}."
        )
    if shape != one_key_shape:
        batch = shape[: len(shape) - len(one_key_shape)]
        raise ValueError(
            f"{layer}: key must be a single PRNG key (shape {one_key_shape}); got a batch of "
            f"keys of shape {shape} (batch shape {batch}). JAX's random functions accept a "
            "single key; pass one of them (e.g. keys[0]), or map over them with jax.vmap."
        )


class ParameterShapeError(ValueError, TypeError):
    """A layer's parameter does not have the shape its hyperparameters imply (e.g. it was
    replaced with `tree_at`), and the layer's maths failed because of it. A ValueError,
    and a TypeError as the JAX shape error it replaces (so that code catching either keeps
    working)."""


def explain_parameter_shapes(
    layer: str, expected: Sequence[tuple[str, Any, tuple[int, ...]]], error: BaseException
) -> None:
    """After a layer's maths failed with `error`: raise a clear `ParameterShapeError` if a
    parameter has another shape than expected; otherwise return (the caller re-raises).

    Called only on the failure path, so it costs nothing when the call works, and it
    never rejects parameters the maths accepts (e.g. a broadcastable bias).

    **Arguments:** `layer`, the layer's name; `expected`, ``(field name, value, expected
    shape)`` for each parameter (`None` values are skipped); `error`, the failure.
    """
    for name, value, shape in expected:
        actual = getattr(value, "shape", None)
        if value is None or actual is None or tuple(actual) == tuple(shape):
            continue
        raise ParameterShapeError(
            f"{layer}.{name} has shape {tuple(actual)}, expected {tuple(shape)} (from the "
            f"layer's hyperparameters). Was it replaced (e.g. with tree_at) by an array of "
            f"another shape? Build a new layer for new sizes. (JAX said: {error})"
        ) from error


def as_tuple(value: Any, n: int, name: str, *, minimum: int = 1) -> tuple[int, ...]:
    """Turn an int or a length-``n`` sequence of ints into an ``n``-tuple, with checks."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        values = (int(value),) * n
    elif isinstance(value, Sequence) and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value
    ):
        values = tuple(int(v) for v in value)
        if len(values) != n:
            raise ValueError(f"{name} must be an int or a sequence of {n} ints; got {value!r}.")
    else:
        raise TypeError(f"{name} must be an int or a sequence of {n} ints; got {value!r}.")
    if any(v < minimum for v in values):
        raise ValueError(f"{name} must be >= {minimum}; got {value!r}.")
    return values


def check_rank(x: Any, expected_rank: int, layer: str, description: str) -> None:
    """Raise a clear error for an input of the wrong rank, mentioning vmap for batches."""
    shape = getattr(x, "shape", None)
    if shape is None:
        raise TypeError(f"{layer} expects an array input; got {type(x).__name__}.")
    if len(shape) != expected_rank:
        if len(shape) == expected_rank + 1:
            hint = (
                " Layers act on one unbatched example: batch with jax.vmap or ecliptic.filter_vmap."
            )
        elif len(shape) == expected_rank - 1:
            hint = (
                " Under jax.vmap / ecliptic.filter_vmap the mapped axis is removed: was one "
                "unbatched example (no batch axis to map over) given to the vmapped function?"
            )
        else:
            hint = ""
        raise ValueError(
            f"{layer} expects an input of rank {expected_rank} ({description}); "
            f"got shape {tuple(shape)}.{hint}"
        )


def compute_dtype(dtype: Any) -> Any:
    """The dtype to do numerically delicate maths in (norms, softmax, trigonometry):
    float32 for float16/bfloat16, whose few mantissa bits lose too much in sums of
    squares and exponentials; otherwise ``dtype`` unchanged."""
    dtype = jnp.dtype(dtype)
    if dtype in (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16)):
        return jnp.dtype(jnp.float32)
    return dtype


def as_padding(
    value: Any, n: int, name: str = "padding", strings: Sequence[str] = ()
) -> str | tuple[tuple[int, int], ...]:
    """Normalise a padding spec to one of ``strings`` (upper-cased) or ``n`` (lo, hi) pairs.

    Accepts an int (same on both sides of every dimension), ``n`` ints (same on both
    sides), or ``n`` (lo, hi) pairs; every amount must be >= 0."""
    if isinstance(value, str):
        upper = value.upper()
        if upper in strings:
            return upper
        allowed = ", ".join(repr(s) for s in strings) or "no strings"
        raise ValueError(f"{name} string must be one of {allowed}; got {value!r}.")

    def is_int(v: Any) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if is_int(value):
        pairs = ((int(value), int(value)),) * n
    elif isinstance(value, Sequence) and len(value) == n and all(is_int(v) for v in value):
        pairs = tuple((int(v), int(v)) for v in value)
    elif (
        isinstance(value, Sequence)
        and len(value) == n
        and all(isinstance(p, Sequence) and len(p) == 2 and all(map(is_int, p)) for p in value)
    ):
        pairs = tuple((int(lo), int(hi)) for lo, hi in value)
    else:
        raise ValueError(
            f"{name} must be an int, {n} ints, or {n} (low, high) pairs of ints"
            + (f", or one of {list(strings)}" if strings else "")
            + f"; got {value!r}."
        )
    if any(p < 0 for pair in pairs for p in pair):
        raise ValueError(f"{name} must be >= 0; got {value!r}.")
    return pairs


def filled(shape: Sequence[int], value: float, dtype: Any) -> jax.Array:
    """An array of ``shape`` filled with ``value`` (ones/zeros parameter init), built on
    the host and transferred: unlike ``jnp.full`` this compiles no XLA program for each
    new shape, which keeps building a model fast."""
    return jax.device_put(np.full(tuple(shape), value, dtype=jnp.dtype(dtype)))
