"""``filter_eval_shape``: `jax.eval_shape` for functions of arbitrary pytrees.

Array and `jax.ShapeDtypeStruct` leaves of ``(fun, args, kwargs)`` are abstract inputs;
everything else is static. With a hashable static part the trace goes through one
module-level `jax.jit`, so repeated calls with the same structure hit JAX's cache.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax

from ._checks import check_callable
from ._split import (
    CallKey,
    StaticOutput,
    call_and_split,
    is_array_or_struct,
    split_call,
)


def _body(dynamic: list[Any], key: CallKey) -> tuple[list[Any], StaticOutput]:
    # A function of this module's own: JAX keeps its trace caches per function.
    return call_and_split(dynamic, key)


_traced_body = jax.jit(_body, static_argnums=1)


def filter_eval_shape(fun: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Compute the output shapes and dtypes of `fun(*args, **kwargs)` without running it.

    **Arguments:**

    - `fun`: the function (it may be a pytree such as a Module).
    - `*args`, `**kwargs`: its arguments. Array leaves and `jax.ShapeDtypeStruct` leaves
        are abstract (only shape and dtype matter); other leaves are passed as they are.

    **Returns:** `fun`'s output with every array replaced by a `jax.ShapeDtypeStruct`;
    non-array outputs are returned as produced.

    ```python
    abstract_model = ecliptic.filter_eval_shape(MyModel, key=jax.random.key(0))
    ```
    """
    check_callable(fun, "filter_eval_shape(fun, ...): fun")
    dynamic, key = split_call((fun, args, kwargs), is_array_or_struct, strict=False)
    if key.hashable:
        out, out_static = _traced_body.eval_shape(dynamic, key)
    else:  # unhashable static leaves: trace without caching
        out, out_static = jax.eval_shape(functools.partial(_body, key=key), dynamic)
    return out_static.unflatten(out)
