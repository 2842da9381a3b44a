"""`announce_transform`: an identity that reports every JAX transformation applied to it.

It is a primitive of its own whose rules announce themselves: each rule rebinds the
primitive with its name pushed on a `stack` parameter, so a later rule knows the chain
of transformations that led to it (e.g. `vmap:jvp_tangent:transpose:lower`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import jax.extend.core as jex
import jax.tree_util as jtu
from jax.interpreters import ad, batching, mlir

from .._checks import check_callable
from .._filters import is_array

_announce_p = jex.Primitive("ecliptic_announce_transform")
_announce_p.multiple_results = True


def _say(params: dict[str, Any], *stages: str) -> None:
    stack = params["stack"] + stages
    params["announce"](params["name"] + ":".join(stack))


def _bind(args: Any, params: dict[str, Any], stage: str) -> list[Any]:
    new = dict(params, stack=params["stack"] + (stage,))
    return _announce_p.bind(*args, **new)


def _impl(*args: Any, **params: Any) -> tuple[Any, ...]:
    _say(params, "impl")
    return args


def _abstract_eval(*avals: Any, **params: Any) -> tuple[Any, ...]:
    _say(params, "trace")
    return avals


def _jvp(primals: tuple, tangents: tuple, **params: Any) -> tuple[list, list]:
    if params["intermediates"]:
        _say(params, "jvp")
    tangents = [ad.instantiate_zeros(t) for t in tangents]  # pyright: ignore[reportAssignmentType]
    return _bind(primals, params, "jvp_primal"), _bind(tangents, params, "jvp_tangent")


def _transpose(cts: tuple, *args: Any, **params: Any) -> list[Any]:
    if params["intermediates"]:
        _say(params, "transpose")
    cts = [ad.instantiate_zeros(ct) for ct in cts]  # pyright: ignore[reportAssignmentType]
    out = iter(_bind(cts, params, "transpose"))
    # Only the tangent-side binds are transposed, and all their inputs are linear.
    return [next(out) if ad.is_undefined_primal(a) else None for a in args]


def _batch(args: tuple, dims: tuple, **params: Any) -> tuple[list, tuple]:
    if params["intermediates"]:
        _say(params, "vmap")
    return _bind(args, params, "vmap"), dims


def _lower(ctx: Any, *args: Any, **params: Any) -> list[Any]:
    del ctx
    _say(params, "lower")
    return list(args)


_announce_p.def_impl(_impl)
_announce_p.def_abstract_eval(_abstract_eval)
ad.primitive_jvps[_announce_p] = _jvp
ad.primitive_transposes[_announce_p] = _transpose
batching.primitive_batchers[_announce_p] = _batch
mlir.register_lowering(_announce_p, _lower)


def announce_transform(
    x: Any,
    name: Hashable | None = None,
    intermediates: bool = False,
    announce: Callable[[str], Any] = print,
    *,
    outer: bool | None = None,
) -> Any:
    """Identity on a pytree that announces each JAX transformation applied to it.

    Each announcement is the chain of stages that reached `x`, joined by `:`. Stages are
    `vmap`, `jvp_primal`, `jvp_tangent` and `transpose` (transformations), ending in
    `impl` (computed eagerly), `trace` (traced into a jaxpr, e.g. by `jit`) or `lower`
    (compiled). For example `jax.jit(jax.grad(f))` announces `jvp_tangent:transpose:trace`
    and `jvp_tangent:transpose:lower` among others. A debugging aid: the exact set of
    announcements depends on JAX's internals and may change.

    **Arguments:**

    - `x`: any pytree; its array leaves are watched, other leaves pass through.
    - `name`: optional label prefixed to each announcement, as `(name) `.
    - `intermediates`: also announce each transformation as it is applied, not only
        the final stages.
    - `announce`: called with each announcement string; defaults to `print`.
    - `outer`: older spelling: `outer=True` means `intermediates=False` and vice versa.
        A bool passed positionally as the second argument is read as `outer`.

    **Returns:** `x`, unchanged.

    ```python
    @jax.jit
    def f(x):
        return jnp.sin(announce_transform(x, name="x"))
    jax.vmap(f)(jnp.ones(3))  # prints "(x) trace", "(x) vmap:trace", "(x) vmap:lower"
    ```
    """
    if isinstance(name, bool):  # announce_transform(x, outer) from the older signature
        outer, name = name, None
    if outer is not None:
        intermediates = not outer
    check_callable(announce, "announce_transform: `announce`")
    prefix = "" if name is None else f"({name}) "
    leaves, treedef = jtu.tree_flatten(x)
    positions = [i for i, leaf in enumerate(leaves) if is_array(leaf)]
    if not positions:
        return x
    out = _announce_p.bind(
        *[leaves[i] for i in positions],
        stack=(),
        name=prefix,
        intermediates=bool(intermediates),
        announce=announce,
    )
    for i, leaf in zip(positions, out):
        leaves[i] = leaf
    return jtu.tree_unflatten(treedef, leaves)
