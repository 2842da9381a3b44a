"""Argument checks shared by the layer families: PRNG keys, input ranks, sizes and
paddings given as ints or tuples, and parameter shapes after a failed call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from .._checks import is_int


class MissingKeyError(ValueError, RuntimeError):
    """A random layer called in training mode without a PRNG key: a ValueError, and a
    RuntimeError as Equinox raises (so that code catching either keeps working)."""


def check_key(key: Any, layer: str, *, required: bool = True) -> None:
    """Raise a clear error unless `key` is one JAX PRNG key (not a batch of them); `None` is
    accepted unless `required` (the caller then decides whether randomness is needed)."""
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
    parameter (``(field name, value, expected shape)`` in `expected`) has another shape;
    otherwise return (the caller re-raises). Being on the failure path only, it costs nothing
    when the call works and never rejects parameters the maths accepts (a broadcastable bias)."""
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
    if is_int(value):
        values = (int(value),) * n
    elif isinstance(value, Sequence) and all(is_int(v) for v in value):
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


def check_positive_int(value: Any, name: str, layer: str) -> int:
    """`value` as an int >= 1, or a clear error naming `layer` and the argument `name`."""
    if not is_int(value):
        raise TypeError(f"{layer}: {name} must be an int; got {value!r}.")
    if value < 1:
        raise ValueError(f"{layer}: {name} must be >= 1; got {value}.")
    return int(value)


def check_feature_size(value: Any, name: str, layer: str) -> int:
    """The number of features `value` stands for (an int >= 0, or 1 for `"scalar"`), or a clear
    error naming `layer` and the argument `name`."""
    if isinstance(value, str) and value == "scalar":
        return 1
    if not is_int(value):
        raise TypeError(f"{layer}: {name} must be an int >= 0 or 'scalar'; got {value!r}.")
    if int(value) < 0:
        raise ValueError(f"{layer}: {name} must be >= 0 (or 'scalar'); got {value}.")
    return int(value)


def check_num_spatial_dims(n: Any, layer: str) -> int:
    """`n` if it is an int >= 1 (a number of spatial dimensions), else a clear error."""
    if not is_int(n) or n < 1:
        raise ValueError(f"{layer}: num_spatial_dims must be an int >= 1; got {n!r}.")
    return n
