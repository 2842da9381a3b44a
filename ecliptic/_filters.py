"""Leaf predicates and the filter / partition / combine trio.

A *filter spec* is a bool, a callable ``leaf -> bool``, or a pytree prefix of those. It
decides, leaf by leaf, which parts of a pytree are kept. Every filtered transformation
in ecliptic is built on these three functions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import PyTree

from ._caches import register_cache

_ARRAY_TYPES = (jax.Array, np.ndarray, np.generic)
_SCALAR_TYPES = (bool, int, float, complex)

# type -> is_array; caching by concrete type makes the hot path (every filter_jit call) one
# dict lookup per leaf instead of an ABC isinstance check.
_array_type_cache: dict[type, bool] = {}
register_cache(_array_type_cache.clear)


class _FilterSpecError(TypeError, ValueError):
    """A filter_spec leaf that is neither a bool nor a callable: a TypeError, and a
    ValueError as Equinox raises (so that either `except` catches it)."""


def is_array(element: Any) -> bool:
    """Return ``True`` for a JAX array (including tracers) or a NumPy array/scalar.

    **Arguments:**

    - `element`: any Python object.

    **Returns:** a Python bool.

    ```python
    is_array(jnp.ones(3))  # True
    is_array(1.0)          # False: Python scalars are not arrays
    ```
    """
    kind = type(element)
    try:
        return _array_type_cache[kind]
    except KeyError:
        result = isinstance(element, _ARRAY_TYPES)
        _array_type_cache[kind] = result
        return result


def is_array_like(element: Any) -> bool:
    """Return ``True`` for anything JAX can turn into an array.

    That is: arrays, Python ``bool``/``int``/``float``/``complex``, and objects defining
    ``__jax_array__``.

    **Arguments:**

    - `element`: any Python object.

    **Returns:** a Python bool.
    """
    return (
        is_array(element) or isinstance(element, _SCALAR_TYPES) or hasattr(element, "__jax_array__")
    )


def _has_inexact_dtype(element: Any) -> bool:
    # jnp's issubdtype knows the ml_dtypes (bfloat16, float8_*: NumPy calls them not
    # inexact) and the extended PRNG-key dtypes (on which NumPy's raises).
    return jnp.issubdtype(element.dtype, jnp.inexact)


def is_inexact_array(element: Any) -> bool:
    """Return ``True`` for a floating-point or complex array.

    These are the leaves that `filter_grad` differentiates.

    **Arguments:**

    - `element`: any Python object.

    **Returns:** a Python bool.
    """
    return is_array(element) and _has_inexact_dtype(element)


def is_inexact_array_like(element: Any) -> bool:
    """Return ``True`` for a floating-point/complex array or Python ``float``/``complex``.

    Objects defining ``__jax_array__`` count when that array is inexact.

    **Arguments:**

    - `element`: any Python object.

    **Returns:** a Python bool.
    """
    if not is_array(element):
        # JAX tracers carry `__jax_array__ = None`: only a callable one converts.
        convert = getattr(element, "__jax_array__", None)
        if callable(convert):
            element = convert()
    return is_inexact_array(element) or isinstance(element, (float, complex))


def _is_none(x: Any) -> bool:
    return x is None


def _describe_spec(filter_spec: Any) -> str:
    return f"{type(filter_spec).__name__} {jtu.tree_structure(filter_spec)}"


def _as_bool(value: Any, spec: Any, leaf: Any) -> bool:
    """What a filter_spec callable returned for ``leaf``, as a bool (or a clear error)."""
    if value is True or value is False:
        return value
    try:
        return bool(value)  # NumPy bools, one-element arrays
    except Exception:
        name = getattr(spec, "__qualname__", None) or repr(spec)
        shape = getattr(value, "shape", None)
        got = f"a value of type {type(value).__name__}" + (
            f" with shape {tuple(shape)}" if shape is not None else ""
        )
        raise TypeError(
            f"filter_spec: the callable {name} must return a bool for each leaf; for a "
            f"leaf of type {type(leaf).__name__} it returned {got}."
        ) from None


def _check_is_leaf(is_leaf: Any, caller: str) -> None:
    if is_leaf is not None and not callable(is_leaf):
        raise TypeError(f"{caller}(is_leaf=...) must be None or a callable; got {is_leaf!r}.")


def resolve_mask(
    pytree: Any, filter_spec: Any, is_leaf: Callable[[Any], bool] | None, caller: str = "filter"
) -> Any:
    """A tree like ``pytree`` with a bool at each leaf: what the spec says of that leaf."""
    _check_is_leaf(is_leaf, caller)

    def apply_spec(spec: Any, subtree: Any) -> Any:
        if isinstance(spec, bool):
            return jtu.tree_map(lambda _: spec, subtree, is_leaf=is_leaf)
        if callable(spec):
            return jtu.tree_map(lambda x: _as_bool(spec(x), spec, x), subtree, is_leaf=is_leaf)
        raise _FilterSpecError(
            "filter_spec leaves must be bools or callables `leaf -> bool`; "
            f"got {type(spec).__name__}: {spec!r}"
        )

    if isinstance(filter_spec, bool) or (
        callable(filter_spec) and not _is_pytree_node(filter_spec)
    ):
        return apply_spec(filter_spec, pytree)
    spec_leaves, spec_def = jtu.tree_flatten(filter_spec, is_leaf=_is_spec_leaf)
    # Match the structures first, so that an error raised by a predicate itself is not
    # reported as a structure mismatch.
    try:
        subtrees = spec_def.flatten_up_to(pytree)
    except ValueError as e:
        raise ValueError(
            "filter_spec must be a pytree prefix of the pytree being filtered. "
            f"filter_spec has structure {jtu.tree_structure(filter_spec, is_leaf=_is_spec_leaf)}"
            f", pytree has structure {jtu.tree_structure(pytree, is_leaf=is_leaf)}."
        ) from e
    return spec_def.unflatten([apply_spec(spec, sub) for spec, sub in zip(spec_leaves, subtrees)])


def _is_spec_leaf(x: Any) -> bool:
    return isinstance(x, bool) or (callable(x) and not _is_pytree_node(x))


def _is_pytree_node(x: Any) -> bool:
    # Modules are callable but are pytree nodes: they are specs only if they have leaves.
    return not jtu.treedef_is_leaf(jtu.tree_structure(x))


def filter(
    pytree: PyTree,
    filter_spec: Any,
    inverse: bool = False,
    replace: Any = None,
    is_leaf: Callable[[Any], bool] | None = None,
) -> PyTree:
    """Keep the leaves that ``filter_spec`` selects; replace the others.

    **Arguments:**

    - `pytree`: any pytree.
    - `filter_spec`: a bool, a callable `leaf -> bool`, or a pytree prefix of `pytree`
        whose leaves are bools or such callables.
    - `inverse`: if `True`, keep the leaves that the spec does *not* select.
    - `replace`: the value put in place of each dropped leaf.
    - `is_leaf`: optional, as in `jax.tree_util.tree_map`.

    **Returns:** a pytree with the same structure as `pytree`.

    ```python
    params = ecliptic.filter(model, ecliptic.is_array)
    ```
    """
    mask = resolve_mask(pytree, filter_spec, is_leaf)
    keep = (lambda m: not m) if inverse else bool
    return jtu.tree_map(lambda m, x: x if keep(m) else replace, mask, pytree, is_leaf=is_leaf)


def partition(
    pytree: PyTree,
    filter_spec: Any,
    replace: Any = None,
    is_leaf: Callable[[Any], bool] | None = None,
) -> tuple[PyTree, PyTree]:
    """Split a pytree in two: the leaves ``filter_spec`` selects, and the rest.

    **Arguments:** as for `filter`.

    **Returns:** `(selected, rest)`, two pytrees of the same structure as `pytree`, each
    with `replace` where the other holds a leaf. `combine(selected, rest)` gives back
    `pytree`.

    ```python
    params, static = ecliptic.partition(model, ecliptic.is_inexact_array)
    model = ecliptic.combine(params, static)
    ```
    """
    mask = resolve_mask(pytree, filter_spec, is_leaf, "partition")
    left = jtu.tree_map(lambda m, x: x if m else replace, mask, pytree, is_leaf=is_leaf)
    right = jtu.tree_map(lambda m, x: replace if m else x, mask, pytree, is_leaf=is_leaf)
    return left, right


def _first_not_none(*leaves: Any) -> Any:
    for leaf in leaves:
        if leaf is not None:
            return leaf
    return None


def combine(*pytrees: PyTree, is_leaf: Callable[[Any], bool] | None = None) -> PyTree:
    """Merge pytrees of one structure: at each leaf, the first value that is not ``None``.

    The inverse of `partition`.

    **Arguments:**

    - `*pytrees`: pytrees with the same structure (treating `None` as a leaf).
    - `is_leaf`: optional, as in `jax.tree_util.tree_map`.

    **Returns:** the combined pytree.
    """
    _check_is_leaf(is_leaf, "combine")
    if not pytrees:
        raise TypeError("combine() needs at least one pytree; got none.")
    leaf_test = _is_none if is_leaf is None else lambda x: x is None or is_leaf(x)
    try:
        return jtu.tree_map(_first_not_none, *pytrees, is_leaf=leaf_test)
    except ValueError as e:
        structures = ", ".join(str(jtu.tree_structure(t, is_leaf=leaf_test)) for t in pytrees)
        raise ValueError(
            "combine() needs pytrees of the same structure (None counts as a leaf); "
            f"got structures: {structures}."
        ) from e
