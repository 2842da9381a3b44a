"""``filter_pmap``: `jax.pmap` with filtered inputs, on the axis specs of `filter_vmap`.

Array leaves of the arguments are the dynamic inputs of `jax.pmap` (mapped along their
``in_axes`` axis, or broadcast when it is `None`; arrays inside ``fun`` are always
broadcast); every other leaf goes into a `StaticKey`, a static (hashed) argument of the
pmapped body, so one static key compiles once. Outputs are split by ``out_axes`` inside
and rebuilt outside.

Before the first call with a new static key or new input shapes/dtypes, the per-device
function is evaluated abstractly (`jax.eval_shape` of its `jax.vmap`), as Equinox does
(so it is traced twice per compilation, which code that counts traces observes): the
output ranks let each ``out_axes`` entry be checked and made non-negative before
compiling. `jax.pmap` fixes its axes when created, so a `_PmapPlan` (one per
configuration) keeps one pmapped body per tuple of per-output axes (usually one).
"""

from __future__ import annotations

import functools
import warnings
import weakref
from collections.abc import Callable, Hashable
from typing import Any, overload

import jax
import jax.tree_util as jtu
import numpy as np

from ._caches import register_cache
from ._jit import Staged, check_donate, undonated_range
from ._module import FunctionWrapper, field
from ._split import Decorator, DonationKey, Params, Result, plan_for
from ._vmap import (
    FrozenDict,
    batch_size,
    if_array,
    make_mapped,
    merge_batched_output,
    named_in_axes,
    reject_keywords,
    resolve_axes,
    split_batched_output,
)

_FORBIDDEN_PMAP_KWARGS = ("static_broadcasted_argnums", "donate_argnums")
_WHAT = "filter_pmap"
_MAP_LEADING_AXIS = if_array(0)


class _PmappedCache(dict):  # type: ignore[type-arg]
    """Per-wrapper ``(kept axes, donated axes, placeholder?) -> _PmapPlan``; hashed and
    compared by identity, so that a wrapper stays a valid (static) pytree."""

    __hash__ = object.__hash__  # type: ignore[assignment]
    __eq__ = object.__eq__  # type: ignore[assignment]


class _PmapWrapper(FunctionWrapper):
    """The callable that `filter_pmap` returns. A pytree: ``fun`` is its child."""

    in_axes: Any = field(static=True)
    out_axes: Any = field(static=True)
    axis_name: Hashable | None = field(static=True)
    axis_size: int | None = field(static=True)
    donate: str = field(static=True)
    pmap_kwargs: dict[str, Any] = field(static=True)
    cache: _PmappedCache = field(static=True)

    def _prepare(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[_PmapPlan, tuple[Any, ...], int]:
        """``(plan, positional arguments of its pmapped body (static key last), size)``."""
        reject_keywords(kwargs, "filter_pmap")
        in_axes = named_in_axes(self.fun, self.in_axes, len(args))
        arg_leaves, arg_treedef, arg_axes = resolve_axes(in_axes, args, "filter_pmap(in_axes=...)")
        size = batch_size(arg_leaves, arg_axes, arg_treedef, self.axis_size, _WHAT)
        self._check_devices(size)
        fun_leaves, fun_treedef = jtu.tree_flatten(self.fun)
        leaves = fun_leaves + arg_leaves
        axes = [None] * len(fun_leaves) + arg_axes
        treedef = jtu.treedef_tuple([fun_treedef, arg_treedef])

        # Arrays are dynamic (mapped or broadcast); everything else is static.
        plan = plan_for(leaves)
        # jax.pmap wants non-negative in_axes.
        dynamic_axes = [
            axis if axis is None or axis >= 0 else axis + leaf.ndim
            for leaf, axis in zip(plan.take_dynamic(leaves), plan.take_dynamic(axes))
        ]
        # Leaves in range(start, stop) are not donated.
        kept_range = (0, len(leaves))
        if self.donate != "none":
            kept_range = undonated_range(self.donate, self.fun, args)
        key = DonationKey(treedef, plan, plan.take_static(leaves), kept_range, _WHAT)
        kept_leaves, donated = key.split_donated(plan.take_dynamic(leaves))
        kept_axes, donated_axes = key.split_donated(dynamic_axes)
        # jax.pmap needs one mapped input to know the axis size: when no input is mapped
        # (axis_size=...), pass an empty placeholder of shape (size, 0).
        placeholder = all(axis is None for axis in dynamic_axes)
        if placeholder:
            kept_leaves.insert(0, np.zeros((size, 0), np.bool_))
            kept_axes.insert(0, 0)
        call_args = (kept_leaves, donated, key)
        cache_key = (tuple(kept_axes), tuple(donated_axes), placeholder)
        plan = self.cache.get(cache_key)
        if plan is None:
            plan = self._plan(*cache_key)
            self.cache[cache_key] = plan
        return plan, call_args, size

    def _plan(
        self, kept_axes: tuple[Any, ...], donated_axes: tuple[Any, ...], placeholder: bool
    ) -> _PmapPlan:
        config = (
            kept_axes,
            donated_axes,
            placeholder,
            self.out_axes,
            self.axis_name,
            self.donate != "none",
            self.pmap_kwargs,
        )
        try:
            hash(config)
        except TypeError:  # e.g. a list in out_axes: this wrapper keeps its own
            return _PmapPlan(*config)
        # Shared by all wrappers alike (a fresh `filter_pmap(f)` per step, a bound method
        # taken anew per call, ...), so that neither JAX nor the plan retraces across them.
        return _shared_plan(*config)  # pyright: ignore[reportArgumentType]

    def _check_devices(self, size: int) -> None:
        devices = self.pmap_kwargs.get("devices")
        available = (
            len(devices)
            if devices is not None
            else jax.local_device_count(self.pmap_kwargs.get("backend"))
        )
        if size > available:
            raise ValueError(
                f"filter_pmap: the mapped axis has size {size}, but only {available} "
                "device(s) are available; each slice runs on its own device. Reshape the "
                "inputs to (devices, per_device, ...) or use filter_vmap inside."
            )

    def _finish(self, out: tuple[Any, Any, Any]) -> Any:
        batched, unbatched, info = out
        return merge_batched_output(batched, unbatched, info)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        plan, call_args, size = self._prepare(args, kwargs)
        pmapped = plan.pmapped_for(call_args, size)
        with warnings.catch_warnings():
            if self.donate.startswith("all"):
                warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
            return self._finish(pmapped(*call_args))

    def lower(self, *args: Any, **kwargs: Any) -> Staged:
        """Lower for these arguments ahead of time (`jax.pmap(...).lower` for filter_pmap).

        **Arguments:** the same as a call of the wrapper.

        **Returns:** an object with `.compile()`, `.as_text()` and the rest of
        `jax.stages.Lowered`; the compiled object is called with the same arguments
        (static ones included) as the wrapper itself.

        ```python
        compiled = ecliptic.filter_pmap(f).lower(x).compile()
        compiled(x)
        ```
        """
        plan, call_args, size = self._prepare(args, kwargs)
        return Staged(plan.pmapped_for(call_args, size).lower(*call_args), self._call_compiled)

    def _call_compiled(self, compiled: Any, args: Any, kwargs: Any) -> Any:
        """Call an ahead-of-time compiled `compiled` with the wrapper's arguments."""
        _, call_args, _ = self._prepare(args, kwargs)
        return self._finish(compiled(*call_args[:-1]))


# Abstract evaluations one plan remembers (oldest dropped first); JAX's own trace caches
# are larger, so past this a call may evaluate again without retracing in jax.pmap.
_EVALUATIONS_PER_PLAN = 1024
_live_plans: weakref.WeakSet[_PmapPlan] = weakref.WeakSet()


class _PmapPlan:
    """One filter_pmap configuration: the output axes found by abstract evaluation, per static
    key and input shapes/dtypes, and one `jax.pmap` per tuple of output axes. The static key
    carries the function and its static leaves, so a plan serves every wrapper alike."""

    __slots__ = (
        "kept_axes",
        "donated_axes",
        "placeholder",
        "out_axes",
        "axis_name",
        "donating",
        "pmap_kwargs",
        "evaluated",
        "pmapped",
        "__weakref__",
    )

    def __init__(
        self,
        kept_axes: tuple[Any, ...],
        donated_axes: tuple[Any, ...],
        placeholder: bool,
        out_axes: Any,
        axis_name: Hashable | None,
        donating: bool,
        pmap_kwargs: dict[str, Any],
    ) -> None:
        self.kept_axes = kept_axes
        self.donated_axes = donated_axes
        self.placeholder = placeholder
        self.out_axes = out_axes
        self.axis_name = axis_name
        self.donating = donating
        self.pmap_kwargs = pmap_kwargs
        # (static key, input shapes/dtypes) -> the jax.pmap to call
        self.evaluated: dict[Any, Any] = {}
        # per-output axes (non-negative) -> jax.pmap
        self.pmapped: dict[tuple[int, ...], Any] = {}
        _live_plans.add(self)

    def pmapped_for(self, call_args: tuple[Any, ...], size: int) -> Any:
        """The `jax.pmap` to call with ``call_args``; evaluates the function abstractly
        first when these static leaves, shapes and dtypes are new (as Equinox does)."""
        kept, donated, key = call_args
        # Shapes and dtypes, not weak types: a weak-typed input retraces in jax.pmap only.
        signature = (
            key,
            tuple([(x.shape, x.dtype) for x in kept]),
            tuple([(x.shape, x.dtype) for x in donated]),
        )
        pmapped = self.evaluated.get(signature)
        if pmapped is None:
            out_axes = self._output_axes(kept, donated, key, size)
            pmapped = self.pmapped.get(out_axes)
            if pmapped is None:
                pmapped = self.pmapped[out_axes] = self._build(out_axes)
            if len(self.evaluated) >= _EVALUATIONS_PER_PLAN:
                del self.evaluated[next(iter(self.evaluated))]
            self.evaluated[signature] = pmapped
        return pmapped

    def _body(
        self, kept: list[Any], donated: list[Any], key: DonationKey
    ) -> tuple[list[Any], list[Any], Any]:
        """The per-device function: rebuild ``(fun, args)``, call, split the output."""
        if self.placeholder:
            kept = kept[1:]
        fun, args = key.unflatten(key.interleave(kept, donated))
        return split_batched_output(fun(*args), self.out_axes, "filter_pmap")

    def _output_axes(
        self, kept: list[Any], donated: list[Any], key: DonationKey, size: int
    ) -> tuple[int, ...]:
        """Trace the function once abstractly, across ``size`` devices (a `jax.vmap`, so
        that collectives on ``axis_name`` work), and return where each output array's
        device axis goes, made non-negative from its rank (checked by the split)."""

        def struct(x: Any) -> jax.ShapeDtypeStruct:
            return jax.ShapeDtypeStruct(x.shape, x.dtype, weak_type=getattr(x, "weak_type", False))

        per_device = jax.vmap(
            functools.partial(self._body, key=key),
            in_axes=(list(self.kept_axes), list(self.donated_axes)),
            axis_name=self.axis_name,
            axis_size=size,
        )
        batched, _, info = jax.eval_shape(
            per_device, [struct(x) for x in kept], [struct(x) for x in donated]
        )
        return tuple(axis % x.ndim for x, axis in zip(batched, info.axes))

    def _build(self, out_axes: tuple[int, ...]) -> Any:
        """The `jax.pmap` of the body for these output axes: jax.pmap puts each output's
        device axis in place, so the outputs are returned without moving an axis."""

        def body(kept: list[Any], donated: list[Any], key: DonationKey) -> Any:
            batched, unbatched, info = self._body(kept, donated, key)
            if len(batched) != len(out_axes):
                raise RuntimeError(
                    "filter_pmap: the function returned a different output structure when "
                    "traced again for the same inputs (an output depends on something "
                    "other than its inputs' shapes, dtypes and static values)."
                )
            # Fresh from this trace: jax.pmap has put the axes in place, nothing to move.
            info.axes = (0,) * len(batched)
            return batched, unbatched, info

        return jax.pmap(
            body,
            axis_name=self.axis_name,
            in_axes=(list(self.kept_axes), list(self.donated_axes)),
            out_axes=(list(out_axes), None, None),
            static_broadcasted_argnums=2,
            donate_argnums=1 if self.donating else (),
            **self.pmap_kwargs,
        )


_shared_plan = functools.lru_cache(maxsize=512)(_PmapPlan)


@register_cache
def clear_pmap_caches() -> None:
    """Forget every plan's abstract evaluations and pmapped bodies (`clear_caches`)."""
    _shared_plan.cache_clear()
    for plan in list(_live_plans):
        plan.evaluated.clear()
        plan.pmapped.clear()


@overload
def filter_pmap(fun: Callable[Params, Result], **kwargs: Any) -> Callable[Params, Result]: ...


@overload
def filter_pmap(fun: None = None, **kwargs: Any) -> Decorator[Params, Result]: ...


def filter_pmap(
    fun: Any = None,
    *,
    in_axes: Any = _MAP_LEADING_AXIS,
    out_axes: Any = _MAP_LEADING_AXIS,
    axis_name: Hashable | None = None,
    axis_size: int | None = None,
    donate: str = "none",
    **pmapkwargs: Any,
) -> Any:
    """Run a function in parallel over devices, mapping over the array leaves of its inputs.

    As `filter_vmap`, but each slice runs on its own device, as in `jax.pmap`. Array
    leaves are traced; every other leaf (numbers, strings, functions, ...) is static and
    hashed, as in `filter_jit`: the function compiles once per distinct static part.
    As in Equinox, each compilation traces the function twice (abstractly, to learn the
    output's shape, then under `jax.pmap`); a call that reuses a compilation traces
    nothing.

    **Arguments:**

    - `fun`: the function (or a Module). Omit it to get a decorator. Arrays inside `fun`
        itself are broadcast to every device.
    - `in_axes`: a pytree prefix of the positional arguments (or a dict from parameter
        name to spec) whose leaves are an int, `None`, or a callable `leaf -> int | None`.
        Default `if_array(0)`: arrays mapped along axis 0, everything else broadcast.
    - `out_axes`: likewise for the output; where the device axis goes in each output
        array. An output with `None` must be the same on every device (e.g. the result of
        `jax.lax.psum`); the value from the first device is returned.
    - `axis_name`: a name for the device axis, for collectives such as `jax.lax.pmean`.
    - `axis_size`: the number of devices to use, required only when no input is mapped.
    - `donate`: as for `filter_jit`: `"none"` (default), `"all"`, `"all-except-first"`,
        `"warn"` or `"warn-except-first"`.
    - `**pmapkwargs`: passed to `jax.pmap` (e.g. `devices`, `backend`).

    **Returns:** the parallelised function; it offers `.lower(*args)` for ahead-of-time
    compilation.

    ```python
    @ecliptic.filter_pmap(axis_name="devices")
    def mean_loss(model, x):
        return jax.lax.pmean(jnp.mean(model(x)), "devices")
    ```
    """
    if fun is None:
        return functools.partial(
            filter_pmap,
            in_axes=in_axes,
            out_axes=out_axes,
            axis_name=axis_name,
            axis_size=axis_size,
            donate=donate,
            **pmapkwargs,
        )
    check_donate("filter_pmap", donate)
    for name in _FORBIDDEN_PMAP_KWARGS:
        if name in pmapkwargs:
            raise TypeError(
                f"filter_pmap does not take {name} as a jax.pmap keyword: non-arrays are "
                "static automatically, and donation is chosen with donate=..."
            )
    if "devices" in pmapkwargs and pmapkwargs["devices"] is not None:
        pmapkwargs["devices"] = tuple(pmapkwargs["devices"])
    return make_mapped(
        "filter_pmap",
        _PmapWrapper,
        fun,
        in_axes,
        out_axes,
        axis_name,
        axis_size,
        donate=donate,
        pmap_kwargs=FrozenDict(pmapkwargs),
        cache=_PmappedCache(),
    )
