"""``filter_vmap`` (and the axis-spec resolution that ``filter_pmap`` shares).

Axis specs are pytree prefixes of the inputs (or outputs) whose leaves are an int, `None`
or a callable ``leaf -> int | None`` such as `if_array(0)`. Array leaves with an int axis
are batched; everything else is broadcast (arrays) or passed through statically.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Hashable, Sequence
from typing import Any, overload

import jax
import jax.numpy as jnp
import jax.tree_util as jtu

from ._checks import check_callable, is_int
from ._filters import is_array, is_array_like
from ._module import FunctionWrapper, field, module_update_wrapper
from ._split import (
    CARRIED,
    DYNAMIC,
    Decorator,
    Params,
    Result,
    StaticOutput,
    leaf_path,
    merge,
    split_by_mask,
)


@dataclasses.dataclass(frozen=True)
class if_array:
    """An axis spec: `axis` for array leaves, `None` (broadcast) for everything else.

    It is a pytree leaf (as in Equinox), so `jax.tree_util.tree_map` over a spec treats
    it as one value; it compares and hashes by `axis`.

    **Arguments:**

    - `axis`: the axis to batch array leaves along.

    ```python
    ecliptic.filter_vmap(fn, in_axes=(ecliptic.if_array(0), None))
    ```
    """

    axis: int

    def __call__(self, x: Any) -> int | None:
        return self.axis if is_array(x) else None


def _is_axis_spec_leaf(spec: Any) -> bool:
    return (
        spec is None
        or isinstance(spec, (int, if_array))
        or (callable(spec) and jtu.treedef_is_leaf(jtu.tree_structure(spec)))
    )


def resolve_axes(spec: Any, tree: Any, what: str) -> tuple[list[Any], Any, list[Any]]:
    """Flatten ``tree`` and give each leaf its axis (int or None) from the prefix ``spec``:
    ``(leaves, treedef, axes)``."""
    axes: list[Any] = []

    def per_subtree(subspec: Any, subtree: Any) -> None:
        for leaf in jtu.tree_leaves(subtree):
            if subspec is None:
                axes.append(None)
            elif isinstance(subspec, int) and not isinstance(subspec, bool):
                axes.append(subspec)
            elif callable(subspec):
                axis = subspec(leaf)
                if axis is not None and not isinstance(axis, int):
                    raise TypeError(
                        f"{what}: the axis spec {subspec!r} returned {axis!r} for a leaf; "
                        "expected an int or None."
                    )
                axes.append(axis)
            else:
                raise TypeError(
                    f"{what} leaves must be an int, None or a callable leaf -> int | None; "
                    f"got {subspec!r}."
                )

    try:
        jtu.tree_map(per_subtree, spec, tree, is_leaf=_is_axis_spec_leaf)
    except ValueError as e:
        spec_structure = jtu.tree_structure(spec, is_leaf=_is_axis_spec_leaf)
        raise ValueError(
            f"{what} must be a pytree prefix of the values it describes; got {what} with "
            f"structure {spec_structure} for values with structure "
            f"{jtu.tree_structure(tree)}."
        ) from e
    leaves, treedef = jtu.tree_flatten(tree)
    return leaves, treedef, axes


def check_axis_size(name: str, axis_size: Any) -> None:
    """A clear error for an `axis_size` that is not None or a positive int."""
    if axis_size is not None and (not is_int(axis_size) or axis_size < 1):
        raise ValueError(f"{name}(axis_size=...) must be a positive int; got {axis_size!r}.")


class _KeywordArgumentsError(TypeError, RuntimeError):
    """Keyword arguments given to a filter_vmap/filter_pmap-wrapped function: a
    TypeError, and a RuntimeError as Equinox raises (so either `except` catches it)."""


def reject_keywords(kwargs: dict[str, Any], wrapper: str) -> None:
    """Raise if `kwargs` is not empty: batching is described for positional arguments
    only (`in_axes`)."""
    if kwargs:
        raise _KeywordArgumentsError(
            f"a function wrapped with {wrapper} takes positional arguments only (got "
            f"keywords {sorted(kwargs)}): bind them first with functools.partial, or "
            "pass them positionally and describe them in in_axes."
        )


def named_in_axes(fun: Callable[..., Any], in_axes: Any, num_args: int) -> Any:
    """Turn ``in_axes={"param": spec}`` into a tuple, defaulting to ``if_array(0)``."""
    if not isinstance(in_axes, dict):
        return in_axes
    remaining = dict(in_axes)
    params = list(inspect.signature(fun).parameters)[:num_args]
    resolved = tuple(remaining.pop(name, if_array(0)) for name in params)
    if remaining:
        raise ValueError(
            f"in_axes names {sorted(remaining)} that are not among the positional "
            f"arguments passed ({params})."
        )
    return resolved


def batch_size(
    leaves: Sequence[Any], axes: Sequence[Any], treedef: Any, axis_size: int | None, what: str
) -> int:
    """Check that every batched leaf has the same size along its axis; return it."""
    sizes = {}
    for index, (leaf, axis) in enumerate(zip(leaves, axes)):
        if axis is None:
            continue
        if not is_array(leaf):
            raise ValueError(
                f"{what}: the non-array input leaf {leaf_path(treedef, index, 'args')} "
                f"({type(leaf).__name__}) was given batch axis {axis}; only arrays can be "
                "batched. Use in_axes=None or ecliptic.if_array(...) for it."
            )
        ndim = jnp.ndim(leaf)
        if not -ndim <= axis < ndim:
            raise ValueError(
                f"{what}: cannot batch the input {leaf_path(treedef, index, 'args')} of shape "
                f"{jnp.shape(leaf)} along axis {axis}."
            )
        sizes[index] = jnp.shape(leaf)[axis]
    distinct = set(sizes.values())
    if axis_size is not None:
        distinct.add(axis_size)
    if len(distinct) > 1:
        detail = ", ".join(f"{leaf_path(treedef, i, 'args')}: {n}" for i, n in sizes.items())
        extra = f" and axis_size={axis_size}" if axis_size is not None else ""
        raise ValueError(
            f"{what}: inconsistent sizes along the batch axes ({detail}{extra}); every "
            "batched input must have the same size."
        )
    if not distinct:
        raise ValueError(
            f"{what}: no input is batched (every in_axes resolved to None); pass "
            "axis_size=... to say how many times to run the function."
        )
    return distinct.pop()


def split_batched_output(
    out: Any, out_axes: Any, caller: str = "filter_vmap"
) -> tuple[list[Any], list[Any], StaticOutput]:
    """Inside the transform: outputs to batch, outputs to leave unbatched, the rest."""
    leaves, treedef, axes = resolve_axes(out_axes, out, "out_axes")
    batched, unbatched, static, kept_axes = [], [], [], []
    for i, (leaf, axis) in enumerate(zip(leaves, axes)):
        if not is_array(leaf) and axis is not None and is_array_like(leaf):
            # A Python number given an output axis is batched as an array (every
            # element the same), as in Equinox.
            leaf = jnp.asarray(leaf)
        if not is_array(leaf):
            static.append(leaf)
        elif axis is None:
            unbatched.append(leaf)
            static.append(CARRIED)
        else:
            rank = leaf.ndim + 1  # with the batch axis
            if not -rank <= axis < rank:
                where = leaf_path(treedef, i, "output")
                raise ValueError(
                    f"{caller}(out_axes=...): cannot put the batch axis of {where} at "
                    f"axis {axis}: batched, it has {rank} dimension(s) (per-example shape "
                    f"{tuple(leaf.shape)}), so out_axes must be in [{-rank}, {rank - 1}]."
                )
            batched.append(leaf)
            kept_axes.append(axis)
            static.append(DYNAMIC)
    return batched, unbatched, StaticOutput(treedef, tuple(static), tuple(kept_axes))


def merge_batched_output(batched: list[Any], unbatched: list[Any], info: StaticOutput) -> Any:
    """Outside the transform: move batch axes into place and rebuild the output."""
    moved = [x if axis == 0 else jnp.moveaxis(x, 0, axis) for x, axis in zip(batched, info.axes)]
    return info.unflatten(moved, unbatched)


class _VmapWrapper(FunctionWrapper):
    in_axes: Any = field(static=True)
    out_axes: Any = field(static=True)
    axis_name: Hashable | None = field(static=True)
    axis_size: int | None = field(static=True)
    vmap_kwargs: dict[str, Any] = field(static=True)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        reject_keywords(kwargs, "filter_vmap")
        in_axes = named_in_axes(self.fun, self.in_axes, len(args))
        leaves, treedef, axes = resolve_axes(in_axes, args, "filter_vmap(in_axes=...)")
        size = batch_size(leaves, axes, treedef, self.axis_size, "filter_vmap")
        dynamic, static = split_by_mask(leaves, [a is not None for a in axes])
        dynamic_axes = [a for a in axes if a is not None]
        fun, out_axes = self.fun, self.out_axes

        def batched_fun(dynamic: list[Any]) -> Any:
            args = treedef.unflatten(merge(dynamic, static))
            return split_batched_output(fun(*args), out_axes)

        vmapped = jax.vmap(
            batched_fun,
            in_axes=(dynamic_axes,),
            out_axes=(0, None, None),
            axis_name=self.axis_name,
            axis_size=size,
            **self.vmap_kwargs,
        )
        try:
            batched, unbatched, info = vmapped(dynamic)
        except ValueError as e:
            if "got axis spec None but output was batched" not in str(e):
                raise
            raise ValueError(
                "filter_vmap: an output that out_axes marks as unbatched (None) depends on "
                "the batched inputs, so it differs across the batch. Give it an int out axis."
            ) from None
        return merge_batched_output(batched, unbatched, info)


@overload
def filter_vmap(fun: Callable[Params, Result], **kwargs: Any) -> Callable[Params, Result]: ...


@overload
def filter_vmap(fun: None = None, **kwargs: Any) -> Decorator[Params, Result]: ...


def filter_vmap(
    fun: Any = None,
    *,
    in_axes: Any = if_array(0),
    out_axes: Any = if_array(0),
    axis_name: Hashable | None = None,
    axis_size: int | None = None,
    **vmap_kwargs: Any,
) -> Any:
    """Vectorise a function over the array leaves of its inputs, like `jax.vmap`.

    **Arguments:**

    - `fun`: the function (or a Module, or a model factory). Omit it to get a decorator.
        Arrays inside `fun` itself are not batched.
    - `in_axes`: a pytree prefix of the positional arguments (or a dict from parameter
        name to spec) whose leaves are an int, `None`, or a callable `leaf -> int | None`.
        Default `if_array(0)`: arrays batched along axis 0, everything else broadcast.
    - `out_axes`: likewise for the output. Non-array outputs are returned as they are.
    - `axis_name`: a name for the batch axis, for collectives such as `jax.lax.psum`.
    - `axis_size`: the batch size, required only when no input is batched.

    **Returns:** the vectorised function.

    ```python
    ensemble = ecliptic.filter_vmap(lambda k: nn.MLP(2, 2, 8, 2, key=k))(keys)
    outputs = ecliptic.filter_vmap(lambda m, x: m(x), in_axes=(0, None))(ensemble, x)
    ```
    """
    if fun is None:
        return functools.partial(
            filter_vmap,
            in_axes=in_axes,
            out_axes=out_axes,
            axis_name=axis_name,
            axis_size=axis_size,
            **vmap_kwargs,
        )
    return make_mapped(
        "filter_vmap",
        _VmapWrapper,
        fun,
        in_axes,
        out_axes,
        axis_name,
        axis_size,
        vmap_kwargs=FrozenDict(vmap_kwargs),
    )


def make_mapped(
    name: str,
    wrapper_type: Callable[..., Any],
    fun: Any,
    in_axes: Any,
    out_axes: Any,
    axis_name: Hashable | None,
    axis_size: int | None,
    **fields: Any,
) -> Any:
    """The wrapper that `filter_vmap`/`filter_pmap` return, after checking `fun` and
    `axis_size` (axis specs made hashable: they are static fields)."""
    check_callable(fun, f"{name}(fun): fun")
    check_axis_size(name, axis_size)
    wrapper = wrapper_type(
        fun=fun,
        in_axes=hashable_spec(in_axes),
        out_axes=hashable_spec(out_axes),
        axis_name=axis_name,
        axis_size=axis_size,
        **fields,
    )
    return module_update_wrapper(wrapper, fun)


class FrozenDict(dict):  # type: ignore[type-arg]
    """A dict hashed by its items, for dict-valued static fields (axis specs, keywords)."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items(), key=lambda kv: kv[0])))


def hashable_spec(spec: Any) -> Any:
    """An axis spec as a static field (hashed into treedefs) can hold it: a dict spec (by
    parameter name) as a `FrozenDict`, any other spec unchanged."""
    return FrozenDict(spec) if isinstance(spec, dict) else spec
