"""The original filtered API: ``jitf``, ``gradf``, ``value_and_grad_f``.

Each is a thin adapter: it turns ``filter_fn`` / ``filter_tree`` into a per-leaf mask and
hands the call to the same machinery as `filter_jit` / `partition` + `jax.grad`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from ._filters import combine, is_array, is_array_like, is_inexact_array, partition, resolve_mask
from ._jit import filter_jit


def _check_filters(name: str, filter_fn: Any, filter_tree: Any) -> None:
    if (filter_fn is None) == (filter_tree is None):
        given = "both" if filter_fn is not None else "neither"
        raise TypeError(
            f"{name} needs exactly one of filter_fn (a function leaf -> bool) or filter_tree "
            f"(a pytree of bools matching the inputs); {given} was given."
        )
    if filter_fn is not None and not callable(filter_fn):
        raise TypeError(f"{name}(filter_fn=...) must be callable leaf -> bool; got {filter_fn!r}.")


def _mask_for(name: str, tree: Any, filter_fn: Any, filter_tree: Any, what: str) -> Any:
    """A pytree of bools like ``tree`` from whichever filter was given."""
    if filter_fn is not None:
        return jtu.tree_map(lambda x: bool(filter_fn(x)), tree)
    try:
        return resolve_mask(tree, filter_tree, None)
    except ValueError:
        raise ValueError(
            f"{name}(filter_tree=...) must be a pytree prefix of {what}; filter_tree has "
            f"structure {jtu.tree_structure(filter_tree)} but {what} has structure "
            f"{jtu.tree_structure(tree)}."
        ) from None


class _StaticArray:
    """A concrete array made static (hashed by value) because the filter did not select it."""

    __slots__ = ("value", "_key")

    def __init__(self, value: Any):
        if isinstance(value, jax.core.Tracer):  # pyright: ignore[reportAttributeAccessIssue]
            raise TypeError(
                "jitf: an array that filter_fn/filter_tree marks as static is a tracer (the "
                "call is inside another transformation); static arrays must be concrete. "
                "Select it for tracing instead."
            )
        array = np.asarray(value)
        self.value = value
        self._key = (array.shape, array.dtype.str, array.tobytes())

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: Any) -> bool:
        return type(other) is _StaticArray and self._key == other._key


def _unwrap_static_arrays(tree: Any) -> Any:
    return jtu.tree_map(lambda x: x.value if type(x) is _StaticArray else x, tree)


def _call_unwrapped(fun: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    return fun(*_unwrap_static_arrays(args), **_unwrap_static_arrays(kwargs))


def _prepare_leaf(leaf: Any, trace: bool) -> Any:
    if trace:
        if is_array(leaf):
            return leaf
        if is_array_like(leaf):  # Python numbers selected for tracing become arrays
            return jnp.asarray(leaf)
        return leaf  # functions & co. cannot be traced: they stay static
    return _StaticArray(leaf) if is_array(leaf) else leaf


def jitf(
    fun: Callable[..., Any],
    *,
    filter_fn: Callable[[Any], bool] | None = None,
    filter_tree: Any = None,
    static_argnums: int | Sequence[int] = (),
    **jitkwargs: Any,
) -> Callable[..., Any]:
    """`jax.jit` that traces the leaves a filter selects and treats the rest as static.

    **Arguments:**

    - `fun`: the function to compile.
    - `filter_fn`: `leaf -> bool`; `True` means trace this leaf.
    - `filter_tree`: a pytree of bools, a prefix of the tuple of positional arguments;
        `True` means trace. Keyword arguments are traced where they are arrays.
        Give exactly one of `filter_fn` and `filter_tree`.
    - `static_argnums`: positional arguments that are wholly static, whatever the filter.
    - `**jitkwargs`: passed on to `jax.jit` (as for `filter_jit`).

    **Returns:** the compiled function.

    ```python
    loss = ecliptic.jitf(loss, filter_fn=ecliptic.is_inexact_array)
    ```
    """
    _check_filters("jitf", filter_fn, filter_tree)
    if isinstance(static_argnums, int):
        static_argnums = (static_argnums,)
    static_set = frozenset(static_argnums)
    donate = jitkwargs.pop("donate", "none")
    jitted = filter_jit(_call_unwrapped, donate=donate, **jitkwargs)

    @functools.wraps(fun)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        for i in static_set:
            if not -len(args) <= i < len(args):
                raise ValueError(
                    f"jitf: static_argnums contains {i} but only {len(args)} positional "
                    "arguments were passed."
                )
        normalised = {i % len(args) for i in static_set} if args else set()
        mask = _mask_for("jitf", args, filter_fn, filter_tree, "the positional arguments")
        mask = tuple(
            jtu.tree_map(lambda _: False, m) if i in normalised else m for i, m in enumerate(mask)
        )
        prepared = jtu.tree_map(lambda m, x: _prepare_leaf(x, m), mask, args)
        kw_mask = (
            _mask_for("jitf", kwargs, filter_fn, None, "")
            if filter_fn is not None
            else jtu.tree_map(is_array, kwargs)
        )
        prepared_kwargs = jtu.tree_map(lambda m, x: _prepare_leaf(x, m), kw_mask, kwargs)
        return jitted(fun, prepared, prepared_kwargs)

    return wrapper


def _normalise_argnums(argnums: int | Sequence[int], name: str) -> tuple[tuple[int, ...], bool]:
    if isinstance(argnums, int):
        return (argnums,), True
    argnums = tuple(argnums)
    if not argnums or not all(isinstance(i, int) for i in argnums):
        raise TypeError(f"{name}(argnums=...) must be an int or a non-empty tuple of ints.")
    return argnums, False


def _check_differentiable(name: str, tree: Any, mask: Any) -> None:
    for (path, leaf), selected in zip(jtu.tree_flatten_with_path(tree)[0], jtu.tree_leaves(mask)):
        if selected and not is_inexact_array(leaf):
            raise TypeError(
                f"{name}: the filter selects the leaf at {jtu.keystr(path) or '<root>'} for "
                f"differentiation, but it is {type(leaf).__name__} "
                f"{getattr(leaf, 'dtype', '')}; only floating-point arrays can be "
                "differentiated (use filter_fn=ecliptic.is_inexact_array)."
            )


def _make_grad(transform: Callable[..., Any], name: str) -> Callable[..., Any]:
    def decorator(
        fun: Callable[..., Any],
        *,
        filter_fn: Callable[[Any], bool] | None = None,
        filter_tree: Any = None,
        argnums: int | Sequence[int] = 0,
        has_aux: bool = False,
        **gradkwargs: Any,
    ) -> Callable[..., Any]:
        _check_filters(name, filter_fn, filter_tree)
        nums, single = _normalise_argnums(argnums, name)

        @functools.wraps(fun)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if max(nums) >= len(args) or min(nums) < -len(args):
                raise ValueError(
                    f"{name}: argnums={argnums} but only {len(args)} positional arguments "
                    "were passed."
                )
            selected = args[nums[0]] if single else tuple(args[i] for i in nums)
            mask = _mask_for(name, selected, filter_fn, filter_tree, "the argnums inputs")
            _check_differentiable(name, selected, mask)
            diff, nondiff = partition(selected, mask)

            def inner(diff: Any) -> Any:
                rebuilt = combine(diff, nondiff)
                new_args = list(args)
                for position, value in zip(nums, (rebuilt,) if single else rebuilt):
                    new_args[position] = value
                return fun(*new_args, **kwargs)

            return transform(inner, has_aux=has_aux, **gradkwargs)(diff)

        return wrapper

    return decorator


gradf = _make_grad(jax.grad, "gradf")
gradf.__name__ = "gradf"
gradf.__doc__ = """Gradient of a function with respect to the leaves a filter selects.

**Arguments:**

- `fun`: a scalar-valued function.
- `filter_fn`: `leaf -> bool`; `True` means differentiate this leaf.
- `filter_tree`: a pytree of bools, a prefix of the input(s) chosen by `argnums`.
    Give exactly one of `filter_fn` and `filter_tree`.
- `argnums`: which positional argument(s) to differentiate (int or tuple of ints).
- `has_aux`: whether `fun` returns `(value, aux)`.

**Returns:** a function returning gradients shaped like the `argnums` input(s), with
`None` for leaves that were not selected (and `(grads, aux)` with `has_aux`).

```python
grads = ecliptic.gradf(loss, filter_fn=ecliptic.is_inexact_array)(model, x, y)
```
"""

value_and_grad_f = _make_grad(jax.value_and_grad, "value_and_grad_f")
value_and_grad_f.__name__ = "value_and_grad_f"
value_and_grad_f.__doc__ = """Value and gradient of a function w.r.t. the leaves a filter selects.

**Arguments:** as for `gradf`.

**Returns:** a function returning `(value, grads)` (`((value, aux), grads)` with
`has_aux`).
"""
