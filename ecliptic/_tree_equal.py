"""`tree_equal`: structural and value equality of pytrees, usable inside `jax.jit`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, PyTree

from ._checks import is_real
from ._filters import is_array
from ._messages import short_repr


def _is_traced(x: Any) -> bool:
    return isinstance(x, jax.core.Tracer)  # pyright: ignore[reportAttributeAccessIssue]


def _is_numpy(x: Any) -> bool:
    return isinstance(x, (np.ndarray, np.generic))


def _is_zero(tolerance: Any) -> bool:
    """A tolerance that asks for exact equality: a Python or NumPy zero (not an array)."""
    return isinstance(tolerance, (int, float, np.number)) and tolerance == 0


def _is_tolerance(value: Any) -> bool:
    """What `np.allclose` takes as a tolerance: a real number (bools and negative ones
    too, as in Equinox) or a 0-d real array."""
    if isinstance(value, (bool, np.bool_)) or is_real(value):
        return True
    kind = getattr(value, "dtype", None) if is_array(value) else None
    if kind is None or np.ndim(value) != 0:
        return False
    return jnp.issubdtype(kind, jnp.floating) or jnp.issubdtype(kind, jnp.integer)


def _array_equal(a: Any, b: Any, rtol: float, atol: float) -> Any:
    """True/False for concrete arrays, a traced bool for tracers. Shapes/dtypes match."""
    if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
        a, b = jax.random.key_data(a), jax.random.key_data(b)
    exact = (_is_zero(rtol) and _is_zero(atol)) or not np.issubdtype(a.dtype, np.number)
    if exact and (_is_traced(a) or _is_traced(b)):
        return jnp.all(a == b)
    if not exact and any(map(_is_traced, (a, b, rtol, atol))):
        # `allclose` also counts exactly equal values as close (negative tolerances).
        return jnp.allclose(a, b, rtol=rtol, atol=atol)
    # Concrete values are compared on the host: no compilation per shape.
    involves_jax = not (_is_numpy(a) and _is_numpy(b))
    a, b = np.asarray(a), np.asarray(b)
    if exact:
        equal = bool(np.array_equal(a, b))
    else:
        equal = bool(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=False))
    # As in Equinox: a comparison involving a JAX array answers with a JAX bool array
    # (a tracer inside `jit`); NumPy-only comparisons answer with a Python bool.
    return jnp.asarray(equal) if involves_jax else equal


def _leaf_equal(a: Any, b: Any, typematch: bool, rtol: float, atol: float) -> Any:
    a_is_array, b_is_array = is_array(a), is_array(b)
    if a_is_array or b_is_array:
        if not (a_is_array and b_is_array):
            return False
        # "Type" for arrays means NumPy vs JAX: a tracer and a concrete jax.Array match.
        if typematch and _is_numpy(a) != _is_numpy(b):
            return False
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        return _array_equal(a, b, rtol, atol)
    if typematch and type(a) is not type(b):
        return False
    result = a == b
    if isinstance(result, bool):
        return result
    if is_array(result):
        return jnp.all(result) if _is_traced(result) else bool(np.all(result))
    return bool(result)


def tree_equal(
    *pytrees: PyTree, typematch: bool = False, rtol: float = 0.0, atol: float = 0.0
) -> bool | Array:
    """Whether pytrees are equal: same structure, and equal leaves.

    Array leaves are equal when they have the same shape, dtype and values (NumPy and
    JAX arrays may be compared with each other; NaN is unequal to everything, as with
    `==`). Other leaves are compared with `==`. Static Module fields are part of the
    structure.

    **Arguments:**

    - `*pytrees`: the pytrees to compare (at least one).
    - `typematch`: if `True`, leaves must also have the same type (for arrays: both NumPy
        or both JAX), so `1 != 1.0` and `np.ones(2) != jnp.ones(2)`.
    - `rtol`, `atol`: tolerances for comparing numeric array values,
        `|a - b| <= atol + rtol * |b|` (or exactly equal, as `np.allclose` decides, so
        negative tolerances are accepted). Exact comparison by default.

    **Returns:** as in Equinox: a Python `bool` when no JAX array values had to be
    compared (only NumPy arrays and other leaves), or when the answer is already `False`
    from the structure, a shape/dtype/type mismatch or a non-array leaf; otherwise a JAX
    boolean scalar array (a tracer inside `jax.jit` & co).

    ```python
    tree_equal([np.ones(2), "a"], [np.ones(2), "a"])    # True
    tree_equal([jnp.ones(2), "a"], [jnp.ones(2), "a"])  # Array(True)
    tree_equal(jnp.ones(2), jnp.ones(3))                # False
    ```
    """
    if not pytrees:
        raise TypeError("tree_equal() needs at least one pytree; got none.")
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not _is_tolerance(value):
            raise ValueError(f"tree_equal({name}=...) must be a number; got {short_repr(value)}.")
    first_leaves, first_treedef = jtu.tree_flatten(pytrees[0])
    array_results: list[Any] = []
    for other in pytrees[1:]:
        leaves, treedef = jtu.tree_flatten(other)
        try:
            same_structure = treedef == first_treedef
        except Exception:  # static fields whose == is not a bool (e.g. arrays)
            same_structure = False
        if not same_structure:
            return False
        for a, b in zip(first_leaves, leaves):
            result = _leaf_equal(a, b, typematch, rtol, atol)
            if result is True:
                continue
            if result is False:
                return False
            array_results.append(result)
    if not array_results:
        return True
    if not any(_is_traced(r) for r in array_results):
        # Concrete JAX bools: combine on the host, answer with a JAX bool as Equinox does.
        return jnp.asarray(all(bool(r) for r in array_results))
    combined = array_results[0]
    for result in array_results[1:]:
        combined = jnp.logical_and(combined, result)
    return combined
