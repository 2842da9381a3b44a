"""Filtered automatic differentiation: grad, value_and_grad, jvp, vjp, jacobians, hessian.

The differentiated inputs are the floating-point (inexact) array leaves; every other leaf
(integer arrays, Python numbers, functions, static fields, ...) rides along unchanged and
gets `None` as its derivative. Each call flattens its inputs once, splits the leaves with
`ecliptic._split`, runs the JAX transformation on the flat list of differentiated
arrays and rebuilds the trees. Non-array outputs cross the JAX transformation inside the
output tree structure (`StaticOutput`, a pytree node without children).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, overload

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from ._ad_utils import (
    PerturbationProbe,
    check_scalar,
    describe_leaf_kind,
    merge_none,
    mismatch_message,
    no_inexact_error,
    require_positional,
    unpack_aux,
)
from ._checks import check_callable
from ._filters import is_inexact_array, is_inexact_array_like
from ._messages import short_repr, type_name
from ._module import FunctionWrapper, Module, field, module_update_wrapper
from ._split import (
    DYNAMIC,
    Decorator,
    Params,
    StaticOutput,
    leaf_path,
    merge,
    split_by_mask,
    split_output,
)

_flatten = jtu.tree_flatten
_FLOAT0 = jax.dtypes.float0


# -- grad / value_and_grad -----------------------------------------------------------------


class _GradWrapper(FunctionWrapper):
    has_aux: bool = field(static=True)
    with_value: bool = field(static=True)
    gradkwargs: tuple[tuple[str, Any], ...] = field(static=True, default=())

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        name = "filter_value_and_grad" if self.with_value else "filter_grad"
        diff, static, mask, treedef = _split_first_argument(name, self.fun, args)
        fun, has_aux, rest = self.fun, self.has_aux, args[1:]

        def inner(diff_leaves: list[Any]) -> Any:
            out = fun(treedef.unflatten(merge(diff_leaves, static)), *rest, **kwargs)
            value = unpack_aux(out, name)[0] if has_aux else out
            check_scalar(value, name, has_aux)
            return out

        value, grads = jax.value_and_grad(inner, has_aux=has_aux, **dict(self.gradkwargs))(diff)
        grad_tree = treedef.unflatten(merge_none(grads, mask))
        if self.with_value:
            return value, grad_tree
        return (grad_tree, value[1]) if has_aux else grad_tree


def _split_first_argument(
    name: str, fun: Any, args: tuple[Any, ...]
) -> tuple[list[Any], tuple[Any, ...], list[bool], Any]:
    """The first argument's floating-point leaves (to differentiate) and the rest."""
    require_positional(name, args)
    leaves, treedef = _flatten(args[0])
    mask = [is_inexact_array(leaf) for leaf in leaves]
    if not any(mask):
        raise no_inexact_error(name, fun, leaves)
    diff, static = split_by_mask(leaves, mask)
    return diff, static, mask, treedef


def _make_grad(fun: Any, has_aux: bool, with_value: bool, gradkwargs: dict[str, Any]) -> Any:
    name = "filter_value_and_grad" if with_value else "filter_grad"
    if "argnums" in gradkwargs:
        raise TypeError(
            f"{name} does not take argnums: it differentiates the first argument. To "
            "differentiate several things, pass them together as a tuple first argument."
        )
    if fun is None:
        return functools.partial(
            filter_value_and_grad if with_value else filter_grad, has_aux=has_aux, **gradkwargs
        )
    _check_callable_and_aux(name, fun, has_aux)
    kw = tuple(sorted(gradkwargs.items()))
    return module_update_wrapper(_GradWrapper(fun, has_aux, with_value, kw), fun)


@overload
def filter_value_and_grad(
    fun: Callable[Params, Any], *, has_aux: bool = False, **gradkwargs: Any
) -> Callable[Params, Any]: ...


@overload
def filter_value_and_grad(
    fun: None = None, *, has_aux: bool = False, **gradkwargs: Any
) -> Decorator[Params, Any]: ...


def filter_value_and_grad(
    fun: Callable[..., Any] | None = None, *, has_aux: bool = False, **gradkwargs: Any
) -> Any:
    """Evaluate a function and its gradient w.r.t. the floating-point arrays of its first
    argument.

    **Arguments:**

    - `fun`: the function; it must return a floating-point scalar (or `(scalar, aux)` with
        `has_aux=True`). Omit it to get a decorator.
    - `has_aux`: whether `fun` returns `(value, aux)`.
    - `**gradkwargs`: passed to `jax.value_and_grad` (e.g. `holomorphic=True`).

    **Returns:** a function with `fun`'s signature returning `(value, grads)`, or
    `((value, aux), grads)` with `has_aux=True`. `grads` has the structure of the first
    argument: arrays for its floating-point array leaves, `None` for every other leaf.
    Other arguments are not differentiated (they may hold traced arrays).

    ```python
    loss, grads = ecliptic.filter_value_and_grad(loss_fn)(model, x, y)
    ```
    """
    return _make_grad(fun, has_aux, True, gradkwargs)


@overload
def filter_grad(
    fun: Callable[Params, Any], *, has_aux: bool = False, **gradkwargs: Any
) -> Callable[Params, Any]: ...


@overload
def filter_grad(
    fun: None = None, *, has_aux: bool = False, **gradkwargs: Any
) -> Decorator[Params, Any]: ...


def filter_grad(
    fun: Callable[..., Any] | None = None, *, has_aux: bool = False, **gradkwargs: Any
) -> Any:
    """Gradient w.r.t. the floating-point array leaves of the first argument.

    **Arguments:**

    - `fun`: the function; it must return a floating-point scalar (or `(scalar, aux)` with
        `has_aux=True`). Omit it to get a decorator: `@filter_grad(has_aux=True)`.
    - `has_aux`: whether `fun` returns `(value, aux)`.
    - `**gradkwargs`: passed to `jax.grad` (e.g. `holomorphic=True`).

    **Returns:** a function with `fun`'s signature returning the gradient, a pytree like the
    first argument with `None` at every leaf that is not a floating-point array (ints,
    bools, Python numbers, functions; static fields keep their values, being part of the
    structure); `(grads, aux)` with `has_aux=True`.
    Differentiate several things at once by passing them as one tuple.

    ```python
    @ecliptic.filter_grad
    def grad_fn(model, x, y):
        return jnp.mean((jax.vmap(model)(x) - y) ** 2)
    grads = grad_fn(model, x, y)
    ```
    """
    return _make_grad(fun, has_aux, False, gradkwargs)


# -- jvp -----------------------------------------------------------------------------------


def _is_zero_tangent(t: Any) -> bool:
    if getattr(t, "dtype", None) == _FLOAT0:
        return True
    if isinstance(t, jax.core.Tracer):  # pyright: ignore[reportAttributeAccessIssue]
        return False  # its value is unknown while tracing, and JAX wants float0 here
    try:
        return bool(np.all(np.asarray(t) == 0))
    except Exception:
        return False


class _TangentError(TypeError, ValueError):
    """A tangent that does not suit its primal in filter_jvp: a TypeError as Equinox
    raises, and a ValueError as ecliptic raised before (so either `except` catches it)."""


def _dtype_or_none(x: Any) -> Any:
    try:
        return jnp.result_type(x)
    except Exception:
        return None


def _tangent_or_none(t: Any) -> Any:
    if isinstance(t, (float, complex)):
        return t  # `jax.jvp` may leave the tangent of a Python-number primal a number
    dtype = getattr(t, "dtype", None)
    if dtype is None or dtype == _FLOAT0 or not jnp.issubdtype(dtype, jnp.inexact):
        return None
    return t


def filter_jvp(
    fn: Callable[..., Any], primals: Sequence[Any], tangents: Sequence[Any], **kwargs: Any
) -> tuple[Any, Any]:
    """Jacobian-vector product of a function of arbitrary pytrees (`jax.jvp`, filtered).

    Floating-point leaves of `primals` (arrays, and Python `float`/`complex`) that are
    given a tangent are differentiated; every other leaf is passed through unchanged.

    **Arguments:**

    - `fn`: the function, called as `fn(*primals, **kwargs)`; it may return any pytree.
    - `primals`: a tuple/list of the positional arguments.
    - `tangents`: the same structure as `primals`; at each floating-point leaf an array of
        the same shape, or `None` (zero tangent); `None` (or zeros) at other leaves.
    - `**kwargs`: keyword arguments of `fn`, not differentiated.

    **Returns:** `(primal_out, tangent_out)`; `tangent_out` has `primal_out`'s structure,
    with `None` at every leaf that is not a floating-point array.

    ```python
    out, t_out = ecliptic.filter_jvp(f, (x, 3), (jnp.ones_like(x), None))
    ```
    """
    check_callable(fn, "filter_jvp(fn, ...): fn")
    for what, value in (("primals", primals), ("tangents", tangents)):
        if not isinstance(value, (tuple, list)):
            raise TypeError(
                f"filter_jvp({what}=...) must be a tuple or list (one entry per positional "
                f"argument of fn); got {type_name(value)}."
            )
    primals, tangents = tuple(primals), tuple(tangents)
    leaves, treedef = _flatten(primals)
    try:
        t_leaves = treedef.flatten_up_to(tangents)
    except (ValueError, TypeError):
        raise ValueError(
            mismatch_message("filter_jvp: tangents", "primals", primals, tangents)
        ) from None
    mask, diff_t = [], []
    for i, (p, t) in enumerate(zip(leaves, t_leaves)):
        if t is None:
            mask.append(False)
        elif is_inexact_array_like(p):
            if np.shape(t) != np.shape(p):
                raise ValueError(
                    f"filter_jvp: the tangent for {leaf_path(treedef, i, 'primals')} has "
                    f"shape {np.shape(t)}, but the primal has shape {np.shape(p)}."
                )
            dtype = jnp.result_type(p)
            t_dtype = _dtype_or_none(t)
            if t_dtype is None or not jnp.issubdtype(t_dtype, jnp.inexact):
                raise _TangentError(
                    f"filter_jvp: the tangent for {leaf_path(treedef, i, 'primals')} must "
                    f"be a floating-point array like its primal ({dtype}); got "
                    f"{short_repr(t)}. (primal and tangent arguments to jax.jvp do not "
                    "match.)"
                )
            if t_dtype != dtype:
                t = jnp.asarray(t, dtype=dtype)
            mask.append(True)
            diff_t.append(t)
        elif _is_zero_tangent(t):
            mask.append(False)
        else:
            raise _TangentError(
                f"filter_jvp: {leaf_path(treedef, i, 'primals')} is not a floating-point "
                f"array ({describe_leaf_kind(p)}), so its tangent must be None; got "
                f"{short_repr(t)}."
            )
    diff_p, static = split_by_mask(leaves, mask)

    probe = PerturbationProbe()

    def inner(diff_leaves: list[Any], anchor: Any) -> Any:
        out, out_static = split_output(fn(*treedef.unflatten(merge(diff_leaves, static)), **kwargs))
        return probe.probe(out, anchor), out_static

    anchor = np.zeros((), np.float32)
    (out, out_static), (t_out, _) = jax.jvp(
        inner, (diff_p, anchor), (diff_t, np.ones((), np.float32))
    )
    # Outputs that do not depend on the differentiated inputs get None, as in Equinox.
    t_tree = out_static.fill(
        [_tangent_or_none(t) if p else None for t, p in zip(t_out, probe.perturbed)]
    )
    return out_static.unflatten(out), t_tree


# -- vjp -----------------------------------------------------------------------------------


class _VjpFn(Module):
    """The pullback returned by `filter_vjp`; a pytree (its residuals are the leaves)."""

    __ecliptic_no_method_wrapping__ = True
    pullback: Callable[..., Any]
    parts: StaticOutput = field(static=True)
    out_structs: tuple[Any, ...] = field(static=True)
    in_treedef: Any = field(static=True)
    in_mask: tuple[bool, ...] = field(static=True)

    def __call__(self, cotangent: Any) -> tuple[Any, ...]:
        parts = self.parts
        try:
            ct_leaves = parts.treedef.flatten_up_to(cotangent)
        except (ValueError, TypeError):
            expected = parts.fill(self.out_structs)
            raise ValueError(
                mismatch_message("filter_vjp: the cotangent", "output", expected, cotangent)
            ) from None
        structs = iter(self.out_structs)
        cts = []
        for i, (s, ct) in enumerate(zip(parts.static, ct_leaves)):
            if s is not DYNAMIC:
                continue
            struct = next(structs)
            if ct is None:
                ct = jnp.zeros(struct.shape, struct.dtype)
            elif np.shape(ct) != struct.shape:
                raise ValueError(
                    f"filter_vjp: the cotangent for {leaf_path(parts.treedef, i, 'output')} "
                    f"has shape {np.shape(ct)}; the output there has shape {struct.shape}."
                )
            elif jnp.result_type(ct) != struct.dtype:
                ct = jnp.asarray(ct, dtype=struct.dtype)
            cts.append(ct)
        (grads,) = self.pullback(cts)
        return self.in_treedef.unflatten(merge_none(grads, self.in_mask))


def filter_vjp(fun: Callable[..., Any], *primals: Any, has_aux: bool = False) -> tuple[Any, ...]:
    """Vector-Jacobian product of a function of arbitrary pytrees (`jax.vjp`, filtered).

    **Arguments:**

    - `fun`: called as `fun(*primals)`; it may return any pytree.
    - `*primals`: the arguments; their floating-point array leaves are differentiated.
    - `has_aux`: whether `fun` returns `(output, aux)`; `aux` is not differentiated.

    **Returns:** `(out, vjp_fn)` or `(out, vjp_fn, aux)`. `vjp_fn(cotangent)` takes a
    pytree like `out` with an array at each floating-point array leaf (`None` means zero;
    other leaves should be `None` and are ignored) and returns a tuple with one gradient
    per primal, `None` at every non-differentiable leaf. `vjp_fn` is a pytree.

    ```python
    out, vjp_fn = ecliptic.filter_vjp(model, x)
    (grad_model, grad_x) = vjp_fn(jnp.ones_like(out))
    ```
    """
    check_callable(fun, "filter_vjp(fun, ...): fun")
    leaves, treedef = _flatten(primals)
    mask = [is_inexact_array(leaf) for leaf in leaves]
    diff, static = split_by_mask(leaves, mask)

    def inner(diff_leaves: list[Any]) -> Any:
        out = fun(*treedef.unflatten(merge(diff_leaves, static)))
        out, aux = unpack_aux(out, "filter_vjp") if has_aux else (out, None)
        d_out, carry, parts = split_output(out, is_inexact_array, carry=True)
        return d_out, (carry, parts, aux)

    d_out, pullback, (carry, parts, aux) = jax.vjp(inner, diff, has_aux=True)
    structs = tuple(jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x)) for x in d_out)
    vjp_fn = _VjpFn(pullback, parts, structs, treedef, tuple(mask))
    out = parts.unflatten(d_out, carry)
    return (out, vjp_fn, aux) if has_aux else (out, vjp_fn)


# -- jacobians and hessian -----------------------------------------------------------------


class _JacWrapper(FunctionWrapper):
    has_aux: bool = field(static=True)
    reverse: bool = field(static=True)
    name: str = field(static=True)  # for messages: filter_jacfwd/jacrev/hessian

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        name = self.name
        diff, static, mask, treedef = _split_first_argument(name, self.fun, args)
        fun, has_aux, rest = self.fun, self.has_aux, args[1:]

        def inner(diff_leaves: list[Any]) -> Any:
            out = fun(treedef.unflatten(merge(diff_leaves, static)), *rest, **kwargs)
            out, aux = unpack_aux(out, name) if has_aux else (out, None)
            d_out, carry, parts = split_output(out, is_inexact_array, carry=True)
            aux_dynamic, aux_static = split_output(aux)
            return d_out, (carry, parts, aux_dynamic, aux_static)

        transform = jax.jacrev if self.reverse else jax.jacfwd
        jac, (_, parts, aux_dynamic, aux_static) = transform(inner, has_aux=True)(diff)
        per_output = [treedef.unflatten(merge_none(j, mask)) for j in jac]
        jac_tree = parts.fill(per_output)
        return (jac_tree, aux_static.unflatten(aux_dynamic)) if has_aux else jac_tree


def filter_jacfwd(fun: Callable[Params, Any], has_aux: bool = False) -> Callable[Params, Any]:
    """Jacobian w.r.t. the floating-point arrays of the first argument, by forward mode.

    **Arguments:**

    - `fun`: the function; its output may be any pytree.
    - `has_aux`: whether `fun` returns `(output, aux)`.

    **Returns:** a function with `fun`'s signature returning the Jacobian (and `aux`): a
    pytree like the output whose floating-point array leaves are each replaced by a pytree
    like the first argument, holding arrays of shape `out.shape + in.shape` (and `None` at
    non-differentiable leaves). Non-floating outputs get `None`.

    ```python
    jac = ecliptic.filter_jacfwd(lambda m, x: m(x))(model, x)
    ```
    """
    _check_callable_and_aux("filter_jacfwd", fun, has_aux)
    return module_update_wrapper(_JacWrapper(fun, has_aux, False, "filter_jacfwd"), fun)


def filter_jacrev(fun: Callable[Params, Any], has_aux: bool = False) -> Callable[Params, Any]:
    """Jacobian w.r.t. the floating-point arrays of the first argument, by reverse mode.

    **Arguments:** as `filter_jacfwd`.

    **Returns:** as `filter_jacfwd`.

    ```python
    jac = ecliptic.filter_jacrev(lambda m, x: m(x))(model, x)
    ```
    """
    _check_callable_and_aux("filter_jacrev", fun, has_aux)
    return module_update_wrapper(_JacWrapper(fun, has_aux, True, "filter_jacrev"), fun)


def filter_hessian(fun: Callable[Params, Any], has_aux: bool = False) -> Callable[Params, Any]:
    """Hessian of a scalar function w.r.t. the floating-point arrays of its first argument.

    **Arguments:**

    - `fun`: returns a floating-point scalar (or `(scalar, aux)` with `has_aux=True`).
    - `has_aux`: whether `fun` returns `(value, aux)`.

    **Returns:** a function with `fun`'s signature returning the Hessian (and `aux`): a
    pytree like the first argument of pytrees like the first argument; the block for leaves
    `a`, `b` has shape `a.shape + b.shape`. Non-differentiable leaves get `None`.

    ```python
    hess = ecliptic.filter_hessian(lambda p: jnp.sum(p["w"] ** 3))({"w": w, "n": 3})
    ```
    """
    _check_callable_and_aux("filter_hessian", fun, has_aux)
    gradient = _JacWrapper(fun, has_aux, True, "filter_hessian")
    return module_update_wrapper(_JacWrapper(gradient, has_aux, False, "filter_hessian"), fun)


def _check_callable_and_aux(name: str, fun: Any, has_aux: Any) -> None:
    check_callable(fun, f"{name}(fun): fun")
    if not isinstance(has_aux, bool):
        raise TypeError(f"{name}(has_aux=...) must be True or False; got {short_repr(has_aux)}.")
