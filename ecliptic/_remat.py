"""``filter_checkpoint``: `jax.checkpoint` (rematerialisation) with filtered inputs.

Array leaves of ``(fun, args, kwargs)`` are the checkpointed function's inputs; every other
leaf is static. When the static part is hashable (the usual case) it is a static argument
of one `jax.checkpoint`-wrapped module-level body, so JAX's trace cache is reused across
calls; otherwise it is closed over.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, overload

import jax

from ._checks import check_callable
from ._messages import short_repr
from ._module import FunctionWrapper, field, module_update_wrapper
from ._split import CallKey, Decorator, Params, Result, StaticOutput, call_and_split, split_call


def _body(dynamic: list[Any], key: CallKey) -> tuple[list[Any], StaticOutput]:
    # A function of this module's own: JAX keeps its trace caches per function.
    return call_and_split(dynamic, key)


class _Checkpointed(FunctionWrapper):
    """The callable returned by `filter_checkpoint`; a pytree whose child is ``fun``."""

    prevent_cse: bool = field(static=True)
    policy: Any = field(static=True)
    remat: Any = field(static=True)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        dynamic, key = split_call((self.fun, args, kwargs), strict=False)
        if key.hashable:
            out, out_static = self.remat(dynamic, key)
        else:  # unhashable static leaves: close over them instead
            body = functools.partial(_body, key=key)
            remat = jax.checkpoint(body, prevent_cse=self.prevent_cse, policy=self.policy)
            out, out_static = remat(dynamic)
        return out_static.unflatten(out)


@overload
def filter_checkpoint(
    fun: Callable[Params, Result],
    *,
    prevent_cse: bool = True,
    policy: Callable[..., bool] | None = None,
) -> Callable[Params, Result]: ...


@overload
def filter_checkpoint(
    fun: None = None, *, prevent_cse: bool = True, policy: Callable[..., bool] | None = None
) -> Decorator[Params, Result]: ...


def filter_checkpoint(
    fun: Callable[..., Any] | None = None,
    *,
    prevent_cse: bool = True,
    policy: Callable[..., bool] | None = None,
) -> Any:
    """Checkpoint a function (`jax.checkpoint`): under differentiation, recompute its
    intermediate values in the backward pass instead of storing them.

    Array leaves of the arguments (and of `fun`, if it is a pytree such as a Module) are
    the checkpointed inputs; all other leaves are static.

    **Arguments:**

    - `fun`: the function. Omit it to get a decorator.
    - `prevent_cse`: as `jax.checkpoint`: stop XLA from merging the recomputation with the
        forward pass (can be `False` inside `jax.lax.scan`).
    - `policy`: as `jax.checkpoint`, e.g. `jax.checkpoint_policies.dots_saveable`.

    **Returns:** a function with `fun`'s signature and results (non-array outputs too).

    ```python
    block = ecliptic.filter_checkpoint(block)
    grads = ecliptic.filter_grad(lambda m, x: jnp.sum(m(x)))(block, x)
    ```
    """
    if fun is None:
        return functools.partial(filter_checkpoint, prevent_cse=prevent_cse, policy=policy)
    check_callable(fun, "filter_checkpoint(fun): fun")
    if policy is not None and not callable(policy):
        raise TypeError(
            "filter_checkpoint(policy=...) must be None or a checkpoint policy (a callable, "
            f"e.g. jax.checkpoint_policies.dots_saveable); got {short_repr(policy)}."
        )
    remat = jax.checkpoint(_body, prevent_cse=prevent_cse, policy=policy, static_argnums=(1,))
    return module_update_wrapper(_Checkpointed(fun, prevent_cse, policy, remat), fun)
