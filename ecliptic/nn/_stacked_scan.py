"""How `Stacked` runs its layers: ONE `lax.scan` over the stacked arrays, with each
step wrapped by a checkpoint policy, and an optional hook around each layer's call
(`intermediates` uses it to return values from inside the scan body).
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
from ._arg_checks import check_key
from ._stateful import MISSING_STATE, check_state


def run_stacked(
    stacked: Any,
    x: Any,
    state: Any,
    key: jax.Array | None,
    kwargs: dict[str, Any],
    around_layer: Callable[[Callable[[], Any]], tuple[Any, Any]] | None = None,
) -> tuple[Any, Any]:
    """Run the layers of the `Stacked` `stacked` one after another in one `lax.scan`; the other
    arguments as `Stacked.__call__` takes them (`state` is `MISSING_STATE` when none was given).

    `around_layer`, if given, is called in the scan body with a function that runs one layer,
    and returns `(what that function returned, extra)`. Returns `(result, extras)`: what
    `Stacked.__call__` returns, and the `extra` values stacked along a leading axis of size
    `n` (`None` without a hook)."""
    stateful = stacked.is_stateful()
    if stateful:
        state = check_state(state, "Stacked")
        substate: Any = state.substate(stacked.layers)
    elif state is not MISSING_STATE:
        raise TypeError(
            f"Stacked: the stacked layers ({type_name(stacked.layers)}) are not stateful, "
            "so call it as `y = stacked(x)` without a state."
        )
    else:
        substate = None
    leaves, treedef = jtu.tree_flatten(stacked.layers)
    mask = [is_array(leaf) for leaf in leaves]
    params = [leaf for leaf, m in zip(leaves, mask) if m]
    _check_leading_axis(params, stacked.n)
    static = [None if m else leaf for leaf, m in zip(leaves, mask)]
    apply = _call_layer if stacked.apply is None else stacked.apply
    # Split lazily: no key, or an apply without a `key` parameter, adds no random ops.
    uses_key = stacked.apply is None or _accepts_key(apply)
    check_key(key, "Stacked", required=False)
    keys = None if key is None or not uses_key else jax.random.split(key, stacked.n)
    hook = around_layer or (lambda run_layer: (run_layer(), None))

    def step(carry: Any, xs: Any) -> tuple[Any, Any]:
        layer_params, layer_state, layer_key = xs
        values = iter(layer_params)
        layer = treedef.unflatten([next(values) if m else s for s, m in zip(static, mask)])
        extra = dict(kwargs)
        if layer_key is not None:
            extra["key"] = layer_key

        def run_layer() -> tuple[Any, Any]:
            if stateful:
                return apply(layer, carry, layer_state, **extra)
            return apply(layer, carry, **extra), None

        (out, new_layer_state), extras = hook(run_layer)
        return out, (new_layer_state, extras)

    if stacked.checkpoint is not False:
        step = jax.checkpoint(step, prevent_cse=False, policy=_policy(stacked.checkpoint))
    try:
        out, (new_substate, extras) = jax.lax.scan(
            step, x, (params, substate, keys), length=stacked.n, unroll=stacked.unroll
        )
    except TypeError as e:
        if "carry" not in str(e):
            raise
        raise TypeError(
            "Stacked: each layer's output is the next layer's input, so it must have "
            "the same pytree structure, shapes and dtypes as the input x. JAX "
            f"reports: {e}"
        ) from None
    if stateful:
        return (out, state.update(new_substate)), extras
    return out, extras


def _check_leading_axis(params: Sequence[Any], n: int) -> None:
    for leaf in params:
        shape = jnp.shape(leaf)
        if not shape or shape[0] != n:
            raise ValueError(
                f"Stacked: every array in `layers` must have a leading axis of size "
                f"n={n}; found one of shape {tuple(shape)}. (Was `layers` "
                "replaced by a single, unstacked layer? Use stack_layers.)"
            )


def _call_layer(layer: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
    return layer(x, *args, **kwargs)


def _accepts_key(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` can be called with ``key=...`` (a `key` parameter or ``**kwargs``)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature available: assume it does
        return True
    return any(
        p.kind is p.VAR_KEYWORD
        or (p.name == "key" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
        for p in parameters
    )


def check_scan_options(apply: Any, checkpoint: Any, unroll: Any, where: str) -> None:
    """Raise a clear error (naming the caller `where`) for a bad `apply`, `checkpoint`
    or `unroll`."""
    if apply is not None and not callable(apply):
        raise TypeError(
            f"{where}: apply must be a callable (layer, x, ...) -> x or None; got "
            f"{short_repr(apply)}."
        )
    if not (isinstance(checkpoint, bool) or callable(checkpoint) or _is_auto(checkpoint)):
        raise TypeError(
            f'{where}: checkpoint must be "auto", a bool or a jax.checkpoint policy (e.g. '
            f"jax.checkpoint_policies.dots_saveable); got {short_repr(checkpoint)}."
        )
    if not is_int(unroll) or unroll < 1:
        raise ValueError(f"{where}: unroll must be an int >= 1; got {unroll!r}.")


_PRODUCTS = frozenset({jax.lax.dot_general_p, jax.lax.conv_general_dilated_p})


def _save_products(primitive: Any, *_: Any, **__: Any) -> bool:
    """The "auto" checkpoint policy: keep matrix products and convolutions for the
    backward pass; recompute the element-wise work between them."""
    return primitive in _PRODUCTS


def _is_auto(checkpoint: Any) -> bool:
    return isinstance(checkpoint, str) and checkpoint == "auto"


def _policy(checkpoint: Any) -> Any:
    """`jax.checkpoint`'s policy for a `checkpoint` option (`None`: save nothing)."""
    if _is_auto(checkpoint):
        return _save_products
    return None if checkpoint is True else checkpoint
