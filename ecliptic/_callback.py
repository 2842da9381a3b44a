"""``filter_pure_callback``: `jax.pure_callback` for callbacks taking and returning pytrees.

Array leaves of the arguments cross to the host through `jax.pure_callback`; every other
leaf is handed to the callback unchanged. The declared ``result_shape_dtypes`` fixes the
output: `jax.ShapeDtypeStruct` (or array) leaves are computed on the host, other leaves
are static and must be returned unchanged by the callback.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from ._ad_utils import mismatch_message
from ._checks import check_callable
from ._filters import is_array
from ._messages import short_repr, type_name
from ._split import is_array_or_struct, leaf_path, merge, same_static, split

_NAME = "filter_pure_callback"


class _ResultValueError(ValueError, RuntimeError):
    """The callback's output does not match `result_shape_dtypes`: a ValueError, and a
    RuntimeError, the type Equinox raises there (so that either `except` catches it)."""


class _ResultTypeError(TypeError, RuntimeError):
    """A callback output of the wrong kind: a TypeError, and the RuntimeError Equinox raises."""


def _where(r_def: Any, index: int) -> str:
    return leaf_path(r_def, index, "result")


def _host_result(
    out: Any,
    expected: Any,
    r_def: Any,
    r_leaves: Sequence[Any],
    structs: Sequence[jax.ShapeDtypeStruct | None],
) -> list[np.ndarray]:
    """Check the callback's output against ``result_shape_dtypes``; return its arrays."""
    try:
        out_leaves = r_def.flatten_up_to(out)
    except (ValueError, TypeError):
        raise _ResultValueError(
            mismatch_message(f"{_NAME}: the callback's output", "result", expected, out)
        ) from None
    arrays = []
    for i, (leaf, declared, struct) in enumerate(zip(out_leaves, r_leaves, structs)):
        if struct is None:
            if not same_static(leaf, declared):
                raise _ResultValueError(
                    "Callback did not return matching static elements: "
                    f"{_NAME}: the callback returned {short_repr(leaf)} at "
                    f"{_where(r_def, i)}, but result_shape_dtypes declares the static "
                    f"value {short_repr(declared)} there."
                )
            continue
        if not (is_array(leaf) or isinstance(leaf, (bool, int, float, complex))):
            raise _ResultTypeError(
                f"{_NAME}: the callback returned {type_name(leaf)} at {_where(r_def, i)}; "
                f"expected an array of shape {struct.shape} and dtype {struct.dtype}."
            )
        array = np.asarray(leaf)
        if array.shape != struct.shape:
            raise _ResultValueError(
                f"{_NAME}: the callback returned an array of shape {array.shape} at "
                f"{_where(r_def, i)}; result_shape_dtypes declares shape {struct.shape}."
            )
        if array.dtype != struct.dtype:
            if not np.can_cast(array.dtype, struct.dtype, casting="same_kind"):
                raise _ResultValueError(
                    f"{_NAME}: the callback returned dtype {array.dtype} at "
                    f"{_where(r_def, i)}; result_shape_dtypes declares {struct.dtype}."
                )
            array = array.astype(struct.dtype)
        arrays.append(array)
    return arrays


def filter_pure_callback(
    callback: Callable[..., Any],
    *args: Any,
    result_shape_dtypes: Any,
    vmap_method: str | None = None,
    sharding: Any = None,
    **kwargs: Any,
) -> Any:
    """Call a Python (host) function from JAX code, with pytree inputs and outputs.

    Array leaves of `args`/`kwargs` are passed to the host through `jax.pure_callback`
    (the callback sees them as arrays); all other leaves are passed as they are. Works
    under `jit`, `grad` (not differentiable itself) and `vmap` (see `vmap_method`).

    **Arguments:**

    - `callback`: the host function, called as `callback(*args, **kwargs)`. It must be
        pure (JAX may skip or repeat calls).
    - `*args`, `**kwargs`: its arguments.
    - `result_shape_dtypes`: the structure of the callback's output: a
        `jax.ShapeDtypeStruct` (or an array) at each array output, and at each non-array
        output the value the callback returns there (it is static).
    - `vmap_method`: as `jax.pure_callback` (`"sequential"`, `"expand_dims"`,
        `"broadcast_all"`, ...); needed to use the callback under `vmap`.
    - `sharding`: as `jax.pure_callback`: where the callback's outputs live.

    **Returns:** the callback's output: arrays as JAX arrays of the declared shapes and
    dtypes (values of the same kind are cast, e.g. float64 to float32), the declared
    static values elsewhere. A mismatching output raises an error naming the leaf.

    ```python
    out = ecliptic.filter_pure_callback(
        lambda x, mode: np.sort(x, kind=mode), x, "stable",
        result_shape_dtypes=jax.ShapeDtypeStruct(x.shape, x.dtype),
    )
    ```
    """
    check_callable(callback, f"{_NAME}(callback, ...): callback")
    leaves, treedef = jtu.tree_flatten((args, kwargs))
    dynamic, static = split(leaves)
    r_leaves, r_def = jtu.tree_flatten(result_shape_dtypes)
    structs = [
        jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)) if is_array_or_struct(x) else None
        for x in r_leaves
    ]
    failures: list[BaseException] = []

    def host(*dynamic_in: Any) -> list[np.ndarray]:
        a, k = treedef.unflatten(merge(dynamic_in, static))
        try:
            return _host_result(callback(*a, **k), result_shape_dtypes, r_def, r_leaves, structs)
        except BaseException as e:
            failures.append(e)
            raise

    try:
        out = jax.pure_callback(
            host,
            [s for s in structs if s is not None],
            *dynamic,
            sharding=sharding,
            vmap_method=vmap_method,
        )
    except Exception:
        if failures:  # run eagerly: re-raise the callback's own error, not XLA's wrapper
            raise failures[0] from None
        raise
    it = iter(out)
    return r_def.unflatten([next(it) if s is not None else x for s, x in zip(structs, r_leaves)])
