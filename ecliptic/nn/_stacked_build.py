"""Building a `Stacked`: stacking separately built layers of one structure into one
layer with stacked arrays, and saying clearly where two layers differ when they cannot
be stacked.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.tree_util as jtu

from .._checks import is_int
from .._filters import is_array
from .._messages import short_repr, type_name
from .._module import Module
from .._paths import flatten_one_level_with_path
from ._stateful import state_indices, with_markers

# Errors that mean "this constructor needs concrete values", on which `Stacked` falls
# back from building the layers under `vmap` to building them one by one.
TRACER_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
)


def check_takes_one_key(make_layer: Callable[..., Any], where: str) -> None:
    """Raise a clear error for a layer factory that cannot be called as
    ``make_layer(key)``.

    **Arguments:** `make_layer`, the factory; `where`, the caller's name.
    **Returns:** nothing.
    """
    try:
        signature = inspect.signature(make_layer)
    except (TypeError, ValueError):  # no signature available: let the call decide
        return
    try:
        signature.bind(None)
    except TypeError:
        raise TypeError(
            f"{where}(make_layer, n): make_layer must take one argument, a PRNG key "
            f"(make_layer(key) -> layer; each layer gets its own key); got "
            f"{short_repr(make_layer)} with signature {signature}, which cannot be called "
            "with one. Write e.g. `lambda key: nn.Linear(3, 3, key=key)`."
        ) from None


def check_n(n: Any, where: str) -> int:
    """`n` (a number of layers) as an int >= 1, or a clear error.

    **Arguments:** `n`, the value given; `where`, the caller's name. **Returns:** `int(n)`.
    """
    if not is_int(n) or n < 1:
        raise ValueError(f"{where}: n (the number of layers) must be an int >= 1; got {n!r}.")
    return int(n)


def check_layer(layer: Any, where: str) -> None:
    """Raise a clear error unless `layer` is callable.

    **Arguments:** `layer`, what a factory returned; `where`, its description.
    **Returns:** nothing.
    """
    if not callable(layer):
        raise TypeError(f"{where} must return a callable layer; got {short_repr(layer)}.")


def stack_trees(layers: Sequence[Any], where: str) -> Any:
    """One layer whose arrays are those of `layers` stacked along a new leading axis.

    **Arguments:** `layers`, layers of one structure (their `StateIndex`es are unified
    to the first's); `where`, the caller's name for the message.

    **Returns:** the stacked layer. **Raises:** `ValueError` naming the first place
    where two layers differ.
    """
    layers = _unify_state_indices(layers)
    first_leaves, treedef = jtu.tree_flatten(layers[0])
    columns: list[list[Any]] = [[leaf] for leaf in first_leaves]
    for i, layer in enumerate(layers[1:], start=1):
        leaves, other = jtu.tree_flatten(layer)
        if other != treedef or not all(map(_same_leaf, first_leaves, leaves)):
            difference = _first_difference(layers[0], layer, "")
            raise ValueError(
                f"{where}: every layer must have the same structure, static fields, "
                f"non-array values and array shapes/dtypes; layers[0] and layers[{i}] differ "
                f"at {difference or 'their tree structure'}."
            )
        for column, leaf in zip(columns, leaves):
            column.append(leaf)
    stacked = [jnp.stack(col) if is_array(col[0]) else col[0] for col in columns]
    return treedef.unflatten(stacked)


def _same_value(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # arrays in static fields, odd __eq__: compare by identity only
        return False


def _same_leaf(a: Any, b: Any) -> bool:
    if is_array(a) or is_array(b):
        return (
            is_array(a)
            and is_array(b)
            and jnp.shape(a) == jnp.shape(b)
            and jnp.result_type(a) == jnp.result_type(b)
        )
    return _same_value(a, b)


def _describe(x: Any) -> str:
    if is_array(x):
        return f"{jnp.result_type(x).name}{list(jnp.shape(x))}"
    name = getattr(x, "__qualname__", None) or getattr(x, "__name__", None)
    if callable(x) and isinstance(name, str):
        return f"function {name}"
    return short_repr(x, 40)


def _first_difference(a: Any, b: Any, path: str) -> str | None:
    """A description of the first place where two layers differ, or None."""
    where = path or "the layer itself"
    if type(a) is not type(b):
        return f"{where}: {_describe(a)} ({type_name(a)}) vs {_describe(b)} ({type_name(b)})"
    if isinstance(a, Module):
        cls = type(a)
        for name in cls.__ecliptic_static_fields__:
            va, vb = a.__dict__.get(name), b.__dict__.get(name)
            if not _same_value(va, vb):
                return f"{path}.{name} (static field): {short_repr(va, 40)} vs {short_repr(vb, 40)}"
        for name in cls.__ecliptic_dynamic_fields__:
            found = _first_difference(a.__dict__.get(name), b.__dict__.get(name), f"{path}.{name}")
            if found:
                return found
        return None
    if a is None or is_array(a):
        return None if _same_leaf(a, b) else f"{where}: {_describe(a)} vs {_describe(b)}"
    children_a, def_a = flatten_one_level_with_path(a)
    children_b, def_b = flatten_one_level_with_path(b)
    if jtu.treedef_is_leaf(def_a) and len(children_a) == 1 and children_a[0][1] is a:
        return None if _same_value(a, b) else f"{where}: {_describe(a)} vs {_describe(b)}"
    if def_a != def_b:
        return f"{where}: {def_a} vs {def_b}"
    for (key, ca), (_, cb) in zip(children_a, children_b):
        found = _first_difference(ca, cb, path + jtu.keystr(key))
        if found:
            return found
    return None


def _unify_state_indices(layers: Sequence[Any]) -> list[Any]:
    """Give every layer the `StateIndex` markers of the first, so that layers built
    separately (each with fresh markers) stack into one state layout."""
    first = [index.marker for index in state_indices(layers[0])]
    out = [layers[0]]
    for layer in layers[1:]:
        if not first or len(list(state_indices(layer))) != len(first):
            out.append(layer)  # nothing to rename, or a difference the caller reports
            continue
        markers = iter(first)
        out.append(with_markers(layer, lambda _path, _index, m=markers: next(m)))
    return out
