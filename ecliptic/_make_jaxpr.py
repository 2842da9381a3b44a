"""``filter_make_jaxpr``: `jax.make_jaxpr` for functions of arbitrary pytrees."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.tree_util as jtu

from ._checks import check_callable
from ._split import DYNAMIC, is_array_or_struct, merge, split, split_output


def filter_make_jaxpr(
    fun: Callable[..., Any],
) -> Callable[..., tuple[Any, Any, Any]]:
    """Trace a function of arbitrary pytrees to a jaxpr over its array inputs.

    Array leaves (and `jax.ShapeDtypeStruct` leaves) of the arguments become the jaxpr's
    inputs, in flattening order; every other leaf is static. Arrays that `fun` closes
    over (or holds, if it is a pytree such as a Module) become the jaxpr's constants.

    **Arguments:**

    - `fun`: the function to trace; it may return any pytree.

    **Returns:** a function taking `fun`'s arguments and returning a triple
    `(closed_jaxpr, out_dynamic_struct, out_static)`: the `jax.extend.core.ClosedJaxpr`
    over the array inputs; a pytree like the output with a `jax.ShapeDtypeStruct` at each
    array output (`None` elsewhere); and a pytree like the output with the non-array
    outputs (`None` at array outputs).

    ```python
    jaxpr, out_struct, out_static = ecliptic.filter_make_jaxpr(model)(x)
    ```
    """
    check_callable(fun, "filter_make_jaxpr(fun): fun")

    @functools.wraps(fun)
    def make_jaxpr(*args: Any, **kwargs: Any) -> tuple[Any, Any, Any]:
        leaves, treedef = jtu.tree_flatten((args, kwargs))
        dynamic, static = split(leaves, is_array_or_struct)

        def flat_fun(*dynamic_in: Any) -> Any:
            a, k = treedef.unflatten(merge(dynamic_in, static))
            return split_output(fun(*a, **k))

        closed, (structs, out_static) = jax.make_jaxpr(flat_fun, return_shape=True)(*dynamic)
        out_struct = out_static.fill(structs)
        out_rest = out_static.treedef.unflatten(
            [None if s is DYNAMIC else s for s in out_static.static]
        )
        return closed, out_struct, out_rest

    return make_jaxpr
