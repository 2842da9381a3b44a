"""``filter_custom_jvp`` and ``filter_custom_vjp``: custom derivatives over arbitrary pytrees.

Each call flattens its inputs once and sorts the leaves into three kinds: *differentiable*
(floating-point arrays of the positional arguments, or of ``vjp_arg``), *other arrays*
(possibly tracers: they are passed to JAX as inputs but never get tangents or
cotangents) and *static* leaves (closed over). A `jax.custom_jvp` / `jax.custom_vjp` is
built around two flat lists of arrays with ``symbolic_zeros=True``, so that the user's rules
see `None` for tangents/cotangents that are known to be zero and `perturbed` flags for
the inputs actually being differentiated.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jax.custom_derivatives import SymbolicZero

from ._ad_utils import describe_value, mismatch_message
from ._checks import check_callable
from ._filters import is_array, is_inexact_array
from ._split import CARRIED, DYNAMIC, StaticOutput, leaf_path, split_output

_flatten = jtu.tree_flatten
_FLOAT0 = jax.dtypes.float0


class _Static:
    """Holds a Python value inside a pytree without being a leaf (rides in the treedef)."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value


jtu.register_pytree_node(_Static, lambda s: ((), s.value), lambda v, _: _Static(v))


class _Inputs:
    """A call's inputs split into differentiable arrays, other arrays and static leaves:
    ``diff_tree`` is the part whose floating-point arrays may be differentiated (the
    positional arguments for custom_jvp, ``vjp_arg`` for custom_vjp), ``other_tree`` never is."""

    __slots__ = ("d_def", "n_d", "parts", "diff", "nondiff")

    def __init__(self, diff_tree: Any, other_tree: Any):
        self.d_def = jtu.tree_structure(diff_tree)
        n_d = self.n_d = self.d_def.num_leaves
        leaves, treedef = _flatten((diff_tree, other_tree))
        static = tuple(
            ((DYNAMIC if i < n_d and is_inexact_array(x) else CARRIED) if is_array(x) else x)
            for i, x in enumerate(leaves)
        )
        self.parts = StaticOutput(treedef, static)
        self.diff = [x for x, s in zip(leaves, static) if s is DYNAMIC]
        self.nondiff = [x for x, s in zip(leaves, static) if s is CARRIED]

    def rebuild(self, diff: Sequence[Any], nondiff: Sequence[Any]) -> tuple[Any, Any]:
        return self.parts.unflatten(diff, nondiff)

    def like_diff_tree(self, values: Sequence[Any], fill: Any) -> Any:
        """A tree like ``diff_tree``: ``values`` at the differentiable leaves, else ``fill``."""
        it = iter(values)
        static = self.parts.static[: self.n_d]
        return self.d_def.unflatten([next(it) if s is DYNAMIC else fill for s in static])

    def diff_positions(self) -> list[int]:
        """Leaf indices (in ``diff_tree``) of the differentiable leaves, in order."""
        return [i for i, s in enumerate(self.parts.static) if s is DYNAMIC]


class _NondiffArgumentDifferentiated(TypeError, RuntimeError):
    """An array in a filter_custom_vjp function's `*args`/`**kwargs` is being
    differentiated: a TypeError, and a RuntimeError as Equinox raises (so either
    `except` catches it)."""


def _zero_like(x: Any) -> Any:
    dtype = jnp.result_type(x)
    if jnp.issubdtype(dtype, jnp.inexact):
        return jnp.zeros(np.shape(x), dtype)
    return np.zeros(np.shape(x), _FLOAT0)


def _none_if_zero(x: Any) -> Any:
    if isinstance(x, SymbolicZero) or getattr(x, "dtype", None) == _FLOAT0:
        return None
    return x


def _check_pair(result: Any, name: str, what: str) -> tuple[Any, Any]:
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        raise TypeError(f"{name}: {what} must return a pair; got {describe_value(result)}.")
    return result[0], result[1]


def _out_tangents(name: str, out_static: StaticOutput, out: list[Any], t_out: Any) -> list[Any]:
    """The rule's output tangents as a flat list matching the array outputs."""
    treedef = out_static.treedef
    try:
        t_leaves = treedef.flatten_up_to(t_out)
    except (ValueError, TypeError):
        primal = out_static.unflatten(out)
        raise ValueError(
            mismatch_message(f"{name}: the tangent output", "primal_out", primal, t_out)
        ) from None
    values = iter(out)
    result = []
    for i, (s, t) in enumerate(zip(out_static.static, t_leaves)):
        if s is not DYNAMIC:
            continue
        primal = next(values)
        dtype = jnp.result_type(primal)
        if t is None or isinstance(t, SymbolicZero) or not jnp.issubdtype(dtype, jnp.inexact):
            result.append(_zero_like(primal))
            continue
        if np.shape(t) != np.shape(primal):
            raise ValueError(
                f"{name}: the tangent for {leaf_path(treedef, i, 'primal_out')} has shape "
                f"{np.shape(t)}, but the primal output there has shape {np.shape(primal)}."
            )
        result.append(t if jnp.result_type(t) == dtype else jnp.asarray(t, dtype))
    return result


class filter_custom_jvp:
    """`jax.custom_jvp` for functions of arbitrary pytrees, with no `nondiff_argnums`.

    The floating-point array leaves of the positional arguments are differentiable;
    everything else (other leaves, and all keyword arguments) is not, and gets a `None`
    tangent. Define the rule with `.def_jvp`:
    `fn_jvp(primals, tangents, **kwargs) -> (primal_out, tangent_out)`, where `primals` is
    the tuple of positional arguments and `tangents` has its structure, with `None` for
    every leaf that is not differentiable or not being differentiated (a symbolic zero).
    In `tangent_out`, `None` means zero.

    **Arguments:**

    - `fn`: the function, `fn(*args, **kwargs)`; it may return any pytree.

    **Returns:** a callable with `fn`'s signature.

    ```python
    @ecliptic.filter_custom_jvp
    def clip_grad(x, limit):
        return x

    @clip_grad.def_jvp
    def _(primals, tangents):
        (x, limit), (tx, _) = primals, tangents
        return x, jnp.clip(tx, -limit, limit)
    ```
    """

    def __init__(self, fn: Callable[..., Any]):
        check_callable(fn, "filter_custom_jvp(fn): fn")
        self.fn = fn
        self.fn_jvp: Callable[..., Any] | None = None
        functools.update_wrapper(self, fn)

    def def_jvp(self, fn_jvp: Callable[..., Any]) -> Callable[..., Any]:
        """Set the JVP rule `fn_jvp(primals, tangents, **kwargs) -> (out, t_out)`.

        **Arguments:**

        - `fn_jvp`: the rule.

        **Returns:** `fn_jvp` unchanged (so it can be used as a decorator).
        """
        check_callable(fn_jvp, "def_jvp(fn_jvp):")
        self.fn_jvp = fn_jvp
        return fn_jvp

    def defjvp(self, fn_jvp: Callable[..., Any]) -> Callable[..., Any]:
        """Deprecated (Equinox's older API): as `def_jvp`, except that `fn_jvp` sees zero
        arrays, not `None`, as the tangents of floating-point arrays.

        **Arguments:** `fn_jvp`, the rule. **Returns:** `fn_jvp` unchanged.
        """
        warnings.warn(
            "filter_custom_jvp.defjvp is deprecated: use def_jvp, whose rule receives "
            "None for zero tangents.",
            DeprecationWarning,
            stacklevel=2,
        )

        def with_zeros(primals: Any, tangents: Any, **kwargs: Any) -> Any:
            return fn_jvp(primals, _materialise(primals, tangents), **kwargs)

        self.def_jvp(with_zeros)
        return fn_jvp

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        fn, fn_jvp, name = self.fn, self.fn_jvp, "filter_custom_jvp"
        if fn_jvp is None:
            raise TypeError(
                f"{name}: {getattr(fn, '__name__', 'the function')} has no JVP rule; define "
                "one with @<function>.def_jvp before calling it."
            )
        inputs = _Inputs(args, kwargs)
        holder: list[StaticOutput] = []

        def primal(diff: list[Any], nondiff: list[Any]) -> list[Any]:
            a, k = inputs.rebuild(diff, nondiff)
            dynamic, out_static = split_output(fn(*a, **k))
            holder.append(out_static)
            return dynamic

        def rule(primals: Any, tangents: Any) -> tuple[list[Any], list[Any]]:
            diff, nondiff = primals
            a, k = inputs.rebuild(diff, nondiff)
            t_args = inputs.like_diff_tree([_none_if_zero(t) for t in tangents[0]], None)
            out, t_out = _check_pair(fn_jvp(a, t_args, **k), name, "the JVP rule")
            if all(is_array(x) for x in (*diff, *nondiff)):
                dynamic, out_static = split_output(out)
            else:
                # `jax.jvp` at Python-number primals hands the rule Python numbers where
                # the function saw arrays, so `fn_jvp` may return numbers where the
                # function returns arrays. Those outputs are differentiated all the same:
                # find them by tracing the function on arrays (this case only).
                if not holder:
                    jax.eval_shape(primal, _as_arrays(diff), _as_arrays(nondiff))
                dynamic, out_static = _split_like(out, holder[0])
            if holder and holder[0].treedef != out_static.treedef:
                raise ValueError(
                    f"{name}: the JVP rule's primal output has structure "
                    f"{out_static.treedef}, but the function returns {holder[0].treedef}."
                )
            holder.append(out_static)
            return dynamic, _out_tangents(name, out_static, dynamic, t_out)

        wrapped = jax.custom_jvp(primal)
        wrapped.defjvp(rule, symbolic_zeros=True)
        out = wrapped(inputs.diff, inputs.nondiff)
        return holder[0].unflatten(out)


class filter_custom_vjp:
    """`jax.custom_vjp` for functions of arbitrary pytrees, differentiating the first argument.

    The function is `fn(vjp_arg, *args, **kwargs)`. Only the floating-point arrays of
    `vjp_arg` get cotangents; array leaves of `args`/`kwargs` may be tracers, but
    differentiating with respect to them raises a `TypeError` (rather than silently
    giving a zero gradient). Define the rules with `.def_fwd` and `.def_bwd`:

    - `fn_fwd(perturbed, vjp_arg, *args, **kwargs) -> (out, residuals)`, where
        `perturbed` is a pytree like `vjp_arg` of bools: which leaves are being
        differentiated.
    - `fn_bwd(residuals, grad_obj, perturbed, vjp_arg, *args, **kwargs) -> grad_vjp_arg`,
        where `grad_obj` is the cotangent of `out` (`None` at leaves with zero or no
        cotangent) and `grad_vjp_arg` has `vjp_arg`'s structure (`None` means zero).

    **Arguments:**

    - `fn`: the function; it may return any pytree.

    **Returns:** a callable with `fn`'s signature.

    ```python
    @ecliptic.filter_custom_vjp
    def scale(x, factor):
        return x * factor

    @scale.def_fwd
    def _(perturbed, x, factor):
        return x * factor, None

    @scale.def_bwd
    def _(residuals, g, perturbed, x, factor):
        return g * factor
    ```
    """

    def __init__(self, fn: Callable[..., Any]):
        check_callable(fn, "filter_custom_vjp(fn): fn")
        self.fn = fn
        self.fn_fwd: Callable[..., Any] | None = None
        self.fn_bwd: Callable[..., Any] | None = None
        functools.update_wrapper(self, fn)

    def def_fwd(self, fn_fwd: Callable[..., Any]) -> Callable[..., Any]:
        """Set the forward rule `fn_fwd(perturbed, vjp_arg, *args, **kwargs)`.

        **Arguments:**

        - `fn_fwd`: returns `(out, residuals)`.

        **Returns:** `fn_fwd` unchanged (so it can be used as a decorator).
        """
        check_callable(fn_fwd, "def_fwd(fn_fwd):")
        self.fn_fwd = fn_fwd
        return fn_fwd

    def def_bwd(self, fn_bwd: Callable[..., Any]) -> Callable[..., Any]:
        """Set the backward rule `fn_bwd(residuals, grad_obj, perturbed, vjp_arg, ...)`.

        **Arguments:**

        - `fn_bwd`: returns the cotangent of `vjp_arg`.

        **Returns:** `fn_bwd` unchanged (so it can be used as a decorator).
        """
        check_callable(fn_bwd, "def_bwd(fn_bwd):")
        self.fn_bwd = fn_bwd
        return fn_bwd

    def defvjp(self, fn_fwd: Callable[..., Any], fn_bwd: Callable[..., Any]) -> None:
        """Deprecated (Equinox's older API): set both rules at once, without `perturbed`.

        **Arguments:**

        - `fn_fwd(vjp_arg, *args, **kwargs) -> (out, residuals)`.
        - `fn_bwd(residuals, grad_obj, vjp_arg, *args, **kwargs) -> grad_vjp_arg`, where
            `grad_obj` holds zero arrays, not `None`, for the floating-point arrays of
            `out`.

        **Returns:** `None`.
        """
        warnings.warn(
            "filter_custom_vjp.defvjp is deprecated: use def_fwd and def_bwd, whose rules "
            "receive `perturbed` and None for zero cotangents.",
            DeprecationWarning,
            stacklevel=2,
        )
        for rule, what in ((fn_fwd, "fn_fwd"), (fn_bwd, "fn_bwd")):
            check_callable(rule, f"defvjp({what}):")

        def fwd(perturbed: Any, vjp_arg: Any, *args: Any, **kwargs: Any) -> Any:
            out, residuals = _check_pair(
                fn_fwd(vjp_arg, *args, **kwargs), "filter_custom_vjp", "fn_fwd"
            )
            return out, (out, residuals)

        def bwd(saved: Any, grad_obj: Any, perturbed: Any, vjp_arg: Any, *a: Any, **k: Any) -> Any:
            out, residuals = saved
            return fn_bwd(residuals, _materialise(out, grad_obj), vjp_arg, *a, **k)

        self.def_fwd(fwd)
        self.def_bwd(bwd)

    def __call__(self, vjp_arg: Any, /, *args: Any, **kwargs: Any) -> Any:
        fn, fn_fwd, fn_bwd = self.fn, self.fn_fwd, self.fn_bwd
        name = "filter_custom_vjp"
        if fn_fwd is None or fn_bwd is None:
            missing = " and ".join(
                m for m, f in (("def_fwd", fn_fwd), ("def_bwd", fn_bwd)) if f is None
            )
            raise TypeError(
                f"{name}: {getattr(fn, '__name__', 'the function')} is missing its rules; "
                f"define them with @<function>.{missing} before calling it."
            )
        inputs = _Inputs(vjp_arg, (args, kwargs))
        holder: list[StaticOutput] = []

        def primal(diff: list[Any], nondiff: list[Any]) -> list[Any]:
            v, (a, k) = inputs.rebuild(diff, nondiff)
            dynamic, out_static = split_output(fn(v, *a, **k))
            holder.append(out_static)
            return dynamic

        def fwd(diff: list[Any], nondiff: list[Any]) -> tuple[list[Any], Any]:
            # As in filter_custom_jvp's rule: Python scalars here stood for arrays.
            diff_values = _as_arrays([p.value for p in diff])
            nondiff_values = _as_arrays([p.value for p in nondiff])
            if any(p.perturbed for p in nondiff):
                # A zero cotangent would be a silently wrong gradient: refuse instead.
                raise _NondiffArgumentDifferentiated(
                    f"{name}: an array in *args/**kwargs is being differentiated, but only "
                    "the first argument (vjp_arg) of a filter_custom_vjp function can be "
                    "(`*args` and `**kwargs` to `filter_custom_vjp` cannot be "
                    "autodifferentiated). Move that array into vjp_arg, or wrap it in "
                    "jax.lax.stop_gradient."
                )
            perturbed = inputs.like_diff_tree([p.perturbed for p in diff], False)
            v, (a, k) = inputs.rebuild(diff_values, nondiff_values)
            out, residuals = _check_pair(fn_fwd(perturbed, v, *a, **k), name, "fn_fwd")
            dynamic, out_static = split_output(out)
            holder.append(out_static)
            r_dynamic, r_static = split_output(residuals)
            hold = _Static((r_static, out_static, perturbed))
            return dynamic, (r_dynamic, hold, diff_values, nondiff_values)

        def bwd(res: Any, g: list[Any]) -> tuple[list[Any], list[Any]]:
            r_dynamic, hold, diff_values, nondiff_values = res
            r_static, out_static, perturbed = hold.value
            it = iter([_none_if_zero(x) for x in g])
            grad_obj = out_static.treedef.unflatten(
                [next(it) if s is DYNAMIC else None for s in out_static.static]
            )
            v, (a, k) = inputs.rebuild(diff_values, nondiff_values)
            grad = fn_bwd(r_static.unflatten(r_dynamic), grad_obj, perturbed, v, *a, **k)
            return _diff_cotangents(inputs, v, grad, diff_values), [None] * len(nondiff_values)

        wrapped = jax.custom_vjp(primal)
        wrapped.defvjp(fwd, bwd, symbolic_zeros=True)
        out = wrapped(inputs.diff, inputs.nondiff)
        return holder[0].unflatten(out)


def _as_arrays(values: Sequence[Any]) -> list[Any]:
    return [x if is_array(x) else jnp.asarray(x) for x in values]


def _split_like(out: Any, like: StaticOutput) -> tuple[list[Any], StaticOutput]:
    """Split ``out`` into dynamic and static leaves where ``like`` has them (as long as
    the structures agree; else as usual, for the caller's structure check to report)."""
    leaves, treedef = _flatten(out)
    if treedef != like.treedef:
        return split_output(out)
    static = tuple(DYNAMIC if s is DYNAMIC else x for x, s in zip(leaves, like.static))
    dynamic = [x for x, s in zip(leaves, like.static) if s is DYNAMIC]
    return dynamic, StaticOutput(treedef, static)


def _materialise(primals: Any, tangents: Any) -> Any:
    """`tangents` with zeros in place of `None` at the floating-point arrays of `primals`
    (the convention of the deprecated `defjvp`/`defvjp`)."""

    def one(primal: Any, tangent: Any) -> Any:
        if tangent is None and is_inexact_array(primal):
            return jnp.zeros_like(primal)
        return tangent

    return jtu.tree_map(one, primals, tangents)


def _diff_cotangents(
    inputs: _Inputs, vjp_arg: Any, grad: Any, diff_values: Sequence[Any]
) -> list[Any]:
    """Check ``fn_bwd``'s result against ``vjp_arg`` and pick the differentiable leaves."""
    name = "filter_custom_vjp"
    try:
        leaves = inputs.d_def.flatten_up_to(grad)
    except (ValueError, TypeError):
        raise ValueError(
            mismatch_message(f"{name}: the result of fn_bwd", "vjp_arg", vjp_arg, grad)
        ) from None
    result = []
    for index, primal in zip(inputs.diff_positions(), diff_values):
        ct = leaves[index]
        if ct is None:
            result.append(None)
            continue
        if np.shape(ct) != np.shape(primal):
            raise ValueError(
                f"{name}: fn_bwd returned a cotangent of shape {np.shape(ct)} for "
                f"{leaf_path(inputs.d_def, index, 'vjp_arg')}, which has shape "
                f"{np.shape(primal)}."
            )
        dtype = jnp.result_type(primal)
        result.append(ct if jnp.result_type(ct) == dtype else jnp.asarray(ct, dtype))
    return result
