"""``filter_closure_convert``: make a function's closed-over arrays explicit pytree leaves.

The function is traced once (`jax.make_jaxpr`) on the array leaves of example arguments;
every array it closes over -- including tracers of an enclosing transformation -- becomes
a constant of that jaxpr, and those constants become the leaves of the returned Module.
Calling it evaluates the jaxpr on the array leaves of the new arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from ._ad_utils import mismatch_message
from ._checks import check_callable
from ._messages import array_text, short_repr, type_name
from ._module import Module, field
from ._split import DYNAMIC, StaticOutput, merge, same_static, split, split_output

_flatten = jtu.tree_flatten


def _struct(x: Any) -> tuple[tuple[int, ...], Any]:
    return np.shape(x), jnp.result_type(x)


class _ConvertedFunction(Module):
    """What both kinds of converted function share: the example inputs' structure, the
    output's structure, and the check that a call matches them."""

    __ecliptic_no_method_wrapping__ = True
    in_treedef: Any = field(static=True)
    in_static: tuple[Any, ...] = field(static=True)
    in_structs: tuple[tuple[tuple[int, ...], Any], ...] = field(static=True)
    out_static: StaticOutput = field(static=True)
    out_structs: tuple[jax.ShapeDtypeStruct, ...] = field(static=True)

    @property
    def in_struct(self) -> Any:
        """The inputs `(args, kwargs)` it was converted for, arrays as
        `jax.ShapeDtypeStruct`s."""
        structs = iter(self.in_structs)
        return self.in_treedef.unflatten(
            [jax.ShapeDtypeStruct(*next(structs)) if s is DYNAMIC else s for s in self.in_static]
        )

    @property
    def out_struct(self) -> Any:
        """Its output, arrays as `jax.ShapeDtypeStruct`s."""
        return self.out_static.unflatten(list(self.out_structs))

    def _checked_inputs(self, args: Any, kwargs: Any) -> list[Any]:
        """The array leaves of a call, after checking it against the example inputs."""
        leaves, treedef = _flatten((args, kwargs))
        dynamic, static = split(leaves)
        self._check(treedef, static, dynamic, args, kwargs)
        return dynamic

    def _check(
        self, treedef: Any, static: tuple[Any, ...], dynamic: list[Any], args: Any, kwargs: Any
    ) -> None:
        if treedef != self.in_treedef:
            raise ValueError(
                mismatch_message(
                    "filter_closure_convert: the inputs (args, kwargs)",
                    "the example inputs (args, kwargs)",
                    self.in_struct,
                    (args, kwargs),
                )
            )
        for i, (s, expected) in enumerate(zip(static, self.in_static)):
            if (s is DYNAMIC) != (expected is DYNAMIC) or not same_static(s, expected):
                raise ValueError(
                    f"filter_closure_convert: input {_path(treedef, i)} is "
                    f"{_describe(s)}, but the function was converted for "
                    f"{_describe(expected)}. Non-array inputs are "
                    "baked in: convert again for new values."
                )
        for j, (x, (shape, dtype)) in enumerate(zip(dynamic, self.in_structs)):
            if np.shape(x) != shape or jnp.result_type(x) != dtype:
                i = [k for k, s in enumerate(static) if s is DYNAMIC][j]
                raise ValueError(
                    f"filter_closure_convert: input {_path(treedef, i)} is a "
                    f"{array_text(jnp.result_type(x), np.shape(x))} array, but the function "
                    f"was converted for a {array_text(dtype, shape)} array."
                )


class _ClosureConverted(_ConvertedFunction):
    """A closure-converted function that closes over arrays (tracers included): they are
    its leaves (`consts`), and calling it evaluates the traced jaxpr on them."""

    jaxpr: Any = field(static=True)
    consts: list[Any]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        dynamic = self._checked_inputs(args, kwargs)
        out = jax.core.eval_jaxpr(self.jaxpr, self.consts, *dynamic)  # pyright: ignore[reportAttributeAccessIssue]
        return self.out_static.unflatten(out)


class _TrivialClosureConvert(_ConvertedFunction):
    """A closure-converted function that closes over no array: it calls the original
    function (after the same input check), so nothing is re-evaluated from a jaxpr.
    The class name is Equinox's, which code may inspect."""

    fn: Callable[..., Any]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self._checked_inputs(args, kwargs)
        return self.fn(*args, **kwargs)


def _describe(s: Any) -> str:
    if s is DYNAMIC:
        return "an array"
    return f"{type_name(s)} {short_repr(s)}"


def _path(treedef: Any, index: int) -> str:
    placeholder = treedef.unflatten(list(range(treedef.num_leaves)))
    for path, leaf in jtu.tree_flatten_with_path(placeholder)[0]:
        if leaf == index:
            # path starts with the (args, kwargs) index
            head, *rest = path
            root = "args" if getattr(head, "idx", 0) == 0 else "kwargs"
            return root + jtu.keystr(tuple(rest))
    return f"#{index}"


def filter_closure_convert(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Trace `fn` on example arguments; return a pytree that computes the same function
    with every closed-over array (including tracers) held as an explicit leaf.

    Use it before handing a closure across an API boundary that must see all its arrays,
    such as `filter_custom_vjp` (pass the converted function as an argument) or the rule of
    a custom primitive.

    **Arguments:**

    - `fn`: the function, called as `fn(*args, **kwargs)`; it may return any pytree.
    - `*args`, `**kwargs`: example arguments. Only their structure, array shapes/dtypes
        and non-array leaves matter; `fn` is traced, not run.

    **Returns:** a Module callable like `fn` on inputs of the same structure, array
    shapes/dtypes and non-array leaves (other inputs raise a `ValueError`).

    ```python
    def f(x):
        return x * closed_over_tracer
    f = ecliptic.filter_closure_convert(f, x)
    ```
    """
    if isinstance(fn, _ConvertedFunction):
        return fn
    check_callable(fn, "filter_closure_convert(fn, ...): fn")
    leaves, treedef = _flatten((args, kwargs))
    dynamic, static = split(leaves)

    def flat_fn(*dynamic_in: Any) -> Any:
        a, k = treedef.unflatten(merge(dynamic_in, static))
        return split_output(fn(*a, **k))

    closed, (out_shapes, out_static) = jax.make_jaxpr(flat_fn, return_shape=True)(*dynamic)
    structs = tuple(_struct(x) for x in dynamic)
    out_structs = tuple(jax.ShapeDtypeStruct(o.shape, o.dtype) for o in out_shapes)
    shapes = (treedef, static, structs, out_static, out_structs)
    if not closed.consts:
        # Closes over no array: nothing to lift into leaves, so keep calling `fn`.
        return _TrivialClosureConvert(*shapes, fn)
    return _ClosureConverted(*shapes, closed.jaxpr, list(closed.consts))
