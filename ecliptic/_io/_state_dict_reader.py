"""Reading a state dict into a model: each entry is fetched once, checked against the
shape and dtype it must have, and every problem (missing, mismatched) is recorded, so
that a report can list them all at once."""

from __future__ import annotations

import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._messages import array_text
from .._module import replace_fields
from .._paths import display, join
from ._arrays import array_like, is_key_dtype
from ._errors import CheckpointError

ARRAYS = (jax.Array, np.ndarray, np.generic)


def to_numpy(value: Any, name: str) -> np.ndarray:
    """A JAX/NumPy array or anything with ``__array__`` (a PyTorch tensor, also bfloat16
    or on a GPU, without importing torch) as a NumPy array."""
    if isinstance(value, jax.Array) and is_key_dtype(value.dtype):
        return np.asarray(jax.random.key_data(value))
    if hasattr(value, "detach") and hasattr(value, "cpu") and not isinstance(value, ARRAYS):
        value = value.detach().cpu()
        torch = sys.modules.get("torch")
        if torch is not None and getattr(value, "dtype", None) == torch.bfloat16:
            return np.asarray(value.view(torch.int16)).view(jnp.bfloat16)
    if isinstance(value, np.ma.MaskedArray):
        raise CheckpointError(
            f"{display(name)}: a masked array (numpy.ma) has no values where it is masked; "
            "fill it first (value.filled(...)) or pass value.data"
        )
    try:
        array = np.asarray(value)
    except Exception as e:
        raise CheckpointError(
            f"{display(name)}: cannot read a {type(value).__name__} as an array ({e})"
        ) from e
    if array.dtype.hasobject or array.dtype.names is not None:
        raise CheckpointError(f"{display(name)}: a {type(value).__name__} is not a numeric array")
    return array


class Reader:
    """Reads entries of a state dict for one model, recording every problem."""

    def __init__(self, entries: dict[str, Any]):
        self.entries = entries
        self.used: set[str] = set()
        self.missing: list[str] = []
        self.mismatched: list[str] = []

    def at(self, prefix: str) -> LayerEntries:
        return LayerEntries(self, prefix)

    def get(self, name: str, shape: tuple[int, ...], dtype: Any, optional: bool) -> Any:
        if name not in self.entries:
            if not optional:
                self.missing.append(name)
            return None
        self.used.add(name)
        dtype = np.dtype(dtype)
        try:
            value = to_numpy(self.entries[name], name)
        except CheckpointError as e:
            self.mismatched.append(str(e))
            return None
        if tuple(value.shape) != tuple(shape):
            self.mismatched.append(
                f"{display(name)}: expected {array_text(dtype, shape)}, got "
                f"{array_text(value.dtype, value.shape)}"
            )
            return None
        if value.dtype != dtype and _dtype_category(value.dtype) != _dtype_category(dtype):
            self.mismatched.append(
                f"{display(name)}: expected {array_text(dtype, shape)}, got "
                f"{array_text(value.dtype, value.shape)} (cannot cast {value.dtype} to {dtype})"
            )
            return None
        with np.errstate(over="ignore", invalid="ignore"):
            out = np.array(value, dtype=dtype)
        problem = out_of_range(value, out)
        if problem is not None:
            self.mismatched.append(f"{display(name)}: {problem}")
            return None
        return out


def out_of_range(value: np.ndarray, cast: np.ndarray) -> str | None:
    """Why `value` does not survive the cast to `cast` (which holds it cast), or None:
    integers that wrap, finite floats that overflow to infinity. Finite floats that only
    round (float64 -> float32) are fine."""
    if value.size == 0 or value.dtype == cast.dtype:
        return None
    kind = cast.dtype.kind
    if kind in "iu" and value.dtype.kind in "iu":
        info = np.iinfo(cast.dtype)
        low, high = value.min(), value.max()
        if low < info.min or high > info.max:
            return (
                f"the values range over [{low}, {high}], which does not fit {cast.dtype} "
                f"([{info.min}, {info.max}]): they would wrap around"
            )
    elif kind in "fc" or jnp.issubdtype(cast.dtype, jnp.floating):
        overflow = np.isinf(cast) & np.isfinite(value)
        if overflow.any():
            finite = np.asarray(value[np.isfinite(value)])
            limit = float(np.finfo(cast.dtype).max)
            span = f"[{finite.min()}, {finite.max()}]" if kind != "c" else ""
            return (
                f"{int(overflow.sum())} finite value(s){' ranging over ' + span if span else ''}"
                f" overflow {cast.dtype} (largest {limit:g}): they would load as inf"
            )
    return None


def _dtype_category(dtype: Any) -> str:
    """float / complex / integer / bool: casts are allowed within a category only (an
    int array for a float weight means the names are mixed up, not a precision change)."""
    for category, base in (
        ("bool", jnp.bool_),
        ("complex", jnp.complexfloating),
        ("float", jnp.floating),
        ("integer", jnp.integer),
    ):
        if jnp.issubdtype(dtype, base):
            return category
    return str(dtype)


class LayerEntries:
    """What a PyTorch layout's `load` function reads the state dict through: names are
    relative to the layer (``"weight"``, not ``"layers.0.weight"``)."""

    def __init__(self, reader: Reader | Renamed, prefix: str):
        self.reader, self.prefix = reader, prefix

    def get(self, name: str, shape: tuple[int, ...], dtype: Any, optional: bool = False) -> Any:
        """The entry, checked against the PyTorch-side shape and cast to `dtype`; None
        if it is absent or does not fit (then that is reported, unless `optional` and
        absent)."""
        return self.reader.get(join(self.prefix, name), shape, dtype, optional)

    def problem(self, name: str, message: str) -> None:
        """Report a problem with an entry."""
        self.reader.mismatched.append(f"{display(join(self.prefix, name))}: {message}")

    def replace(self, node: Any, **fields: Any) -> Any:
        """`node` with the given fields replaced (NumPy values become the old leaf's
        kind of array)."""
        return replace_fields(
            node,
            **{
                field: array_like(value, node.__dict__[field])
                if isinstance(value, np.ndarray)
                else value
                for field, value in fields.items()
            },
        )

    def set_state(self, state: Any, index: Any, value: Any) -> Any:
        """`state.set(index, value)`, values converted like the old ones."""
        old = state.get(index)
        new = jax.tree_util.tree_map(lambda o, v: array_like(np.asarray(v), o), old, value)
        return state.set(index, new)


class Renamed:
    """A reader that fetches some entries under other names (where PyTorch keeps a
    parametrised layer's weight, for instance)."""

    def __init__(self, reader: Reader | Renamed, renames: dict[str, str]):
        self.reader = reader
        self.renames = renames
        self.mismatched = reader.mismatched

    def at(self, prefix: str) -> LayerEntries:
        return LayerEntries(self, prefix)

    def get(self, name: str, shape: tuple[int, ...], dtype: Any, optional: bool) -> Any:
        return self.reader.get(self.renames.get(name, name), shape, dtype, optional)
