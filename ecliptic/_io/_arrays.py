"""Arrays as the I/O services see them: PRNG keys stored as their raw data, loaded
NumPy arrays turned back into the kind of leaf they replace."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from ._errors import CheckpointError


def is_key_dtype(dtype: Any) -> bool:
    """Whether ``dtype`` is a JAX PRNG key dtype (``key<fry>`` and co)."""
    return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def key_impl(like: Any) -> Any:
    """The PRNG implementation of a key array or a key-typed ShapeDtypeStruct."""
    try:
        return jax.random.key_impl(like)
    except TypeError:
        impl = getattr(like.dtype, "_impl", None)
        if impl is None:
            raise CheckpointError(f"cannot tell the PRNG implementation of {like!r}") from None
        return impl


def key_data_struct(like: Any) -> jax.ShapeDtypeStruct:
    """Shape and dtype of ``jax.random.key_data`` of a key array (or its struct)."""
    return jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(like.shape, like.dtype))


def stored_struct(leaf: Any) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of what is stored for an array leaf: a PRNG key's raw data, the
    leaf itself otherwise."""
    if is_key_dtype(leaf.dtype):
        data = key_data_struct(leaf)
        return tuple(data.shape), np.dtype(data.dtype)
    return tuple(leaf.shape), np.dtype(leaf.dtype)


def array_like(array: np.ndarray, like: Any) -> Any:
    """A loaded NumPy `array` as the same kind of leaf as `like`: a NumPy array or
    scalar, a PRNG key array (from its raw data), or a JAX array, on `like`'s sharding
    when it has one."""
    if isinstance(like, np.generic):
        return array[()]
    if isinstance(like, np.ndarray):
        return array
    if is_key_dtype(like.dtype):
        return jax.random.wrap_key_data(array, impl=key_impl(like))  # pyright: ignore[reportArgumentType]
    sharding = getattr(like, "sharding", None)
    if sharding is not None and not isinstance(like, jax.core.Tracer):  # pyright: ignore[reportAttributeAccessIssue]
        return jax.device_put(array, sharding)
    return jax.device_put(array)  # a plain transfer: no op to compile


def as_numpy(leaf: Any) -> np.ndarray:
    """A leaf (JAX/NumPy array or scalar) as a NumPy array, PRNG keys as their raw data."""
    if isinstance(leaf, jax.Array) and is_key_dtype(leaf.dtype):
        leaf = jax.random.key_data(leaf)
    return np.asarray(leaf)
