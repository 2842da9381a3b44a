"""`store_dce` / `inspect_dce`: see which values a compiled function actually computes.

`store_dce` routes each array through an identity host callback that records, when it
runs, that the array was computed. A callback without side effects is removed together
with its value when that value is dead code, so after running the jitted function, the
arrays whose callbacks never ran are exactly those that dead-code elimination removed.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable
from typing import Any

import jax
import jax.tree_util as jtu
import numpy as np

from .._filters import is_array
from .._messages import describe
from .._pretty_print import tree_pformat


class _Entry:
    """One traced call of `store_dce`: the value's structure and which arrays ran."""

    __slots__ = ("treedef", "leaves", "positions", "alive")

    def __init__(self, treedef: Any, leaves: list[Any], positions: list[int]):
        self.treedef = treedef
        self.leaves = leaves  # non-array leaves as given; arrays as their summary
        self.positions = positions
        self.alive: set[int] = set()


class _Shown:
    """A leaf printed as bare text."""

    __slots__ = ("text",)

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


# Debugging records: name -> entries, in trace order. Grows with each traced call of
# `store_dce`; `inspect_dce(name, clear=True)` empties it.
_store: dict[Hashable, list[_Entry]] = {}


def _mark_alive(entry: _Entry, position: int, value: np.ndarray) -> np.ndarray:
    entry.alive.add(position)
    return np.asarray(value)


def store_dce(x: Any, name: Hashable | None = None) -> Any:
    """Inside a jitted function, record which arrays of `x` survive dead-code elimination.

    Acts as the identity. Run the jitted function, then call `inspect_dce(name)` to see
    which arrays were computed and which the compiler removed as unused. The recording
    costs a host round trip per array, so use it for debugging only.

    **Arguments:**

    - `x`: any pytree; its array leaves are tracked, other leaves are only displayed.
    - `name`: any hashable label, to tell several call sites apart in `inspect_dce`.

    **Returns:** `x`, unchanged. Use the returned value in place of `x`.

    ```python
    @jax.jit
    def f(x):
        a, b = ecliptic.debug.store_dce((x * 2, x + 1), name="f")
        return a
    f(jnp.ones(3))
    ecliptic.debug.inspect_dce("f")  # [(False, True)]: `b` was eliminated
    ```
    """
    try:
        hash(name)
    except TypeError:
        raise TypeError(f"store_dce: `name` must be hashable; got {name!r}.") from None
    leaves, treedef = jtu.tree_flatten(x)
    positions = [i for i, leaf in enumerate(leaves) if is_array(leaf)]
    if not any(isinstance(leaves[i], jax.core.Tracer) for i in positions):  # pyright: ignore[reportAttributeAccessIssue]
        raise RuntimeError(
            "store_dce must be used inside a jax.jit/filter_jit-compiled function, on "
            "values computed there; outside jit nothing is ever eliminated."
        )
    shown = [describe(leaf) if i in positions else leaf for i, leaf in enumerate(leaves)]
    entry = _Entry(treedef, shown, positions)
    _store.setdefault(name, []).append(entry)
    for i in positions:
        leaf = leaves[i]
        leaves[i] = jax.pure_callback(
            functools.partial(_mark_alive, entry, i),
            jax.ShapeDtypeStruct(leaf.shape, leaf.dtype),
            leaf,
            vmap_method="expand_dims",
        )
    return jtu.tree_unflatten(treedef, leaves)


def inspect_dce(name: Hashable | None = None, *, clear: bool = False) -> list[Any]:
    """Report which arrays recorded by `store_dce(..., name)` were dead-code-eliminated.

    Call it after running the jitted function (before the first run nothing has been
    computed, so everything looks eliminated). Prints one entry per traced `store_dce`
    call, with eliminated arrays shown as `<DCE'd>`.

    **Arguments:**

    - `name`: the label given to `store_dce`.
    - `clear`: forget the records for `name` afterwards.

    **Returns:** a list with one pytree per traced `store_dce` call, shaped like its `x`,
    whose array leaves are replaced by `True` (eliminated) or `False` (computed).

    ```python
    ecliptic.debug.inspect_dce("f")  # prints e.g. "Entry 0: (f32[3], <DCE'd>)"
    ```
    """
    entries = _store.pop(name, []) if clear else _store.get(name, [])
    plural = "" if len(entries) == 1 else "s"
    print(f"Found {len(entries)} store_dce call{plural} named {name!r}.")
    results = []
    for k, entry in enumerate(entries):
        shown = list(entry.leaves)
        flags = list(entry.leaves)
        for i in entry.positions:
            dead = i not in entry.alive
            flags[i] = dead
            shown[i] = _Shown("<DCE'd>" if dead else entry.leaves[i])
        print(f"Entry {k}: {tree_pformat(jtu.tree_unflatten(entry.treedef, shown))}")
        results.append(jtu.tree_unflatten(entry.treedef, flags))
    return results
