"""Weight tying: one parameter used in several places of a model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar

import jax.numpy as jnp
import jax.tree_util as jtu

from .._filters import is_array
from .._module import Module, field
from .._tree import tree_at

_T = TypeVar("_T")


class _Tied:
    """Placeholder left where a tied node was removed: a static, non-array leaf that is
    equal to every other placeholder (so jit caches are shared)."""

    __slots__ = ()

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, _Tied)

    def __hash__(self) -> int:
        return hash(_Tied)

    def __repr__(self) -> str:
        return "<tied>"


_TIED = _Tied()


def _is_tied(x: Any) -> bool:
    return isinstance(x, _Tied)


def _layout(node: Any) -> Any:
    """The structure of ``node`` with arrays replaced by (shape, dtype), for comparison."""
    return jtu.tree_map(
        lambda x: (tuple(jnp.shape(x)), jnp.dtype(x.dtype).name) if is_array(x) else x, node
    )


class Shared(Module, Generic[_T]):
    """Ties parts of a pytree together, e.g. an embedding and an output projection.

    The nodes that `where` selects are removed from the stored pytree; calling the
    `Shared` puts the values that `get` selects back in their place. There is a single
    copy of each tied parameter, so gradients from both uses add up in it, and an
    optimiser update (`apply_updates`) keeps the uses identical.

    **Arguments:**

    - `pytree`: the pytree (usually a tuple of layers) with the parameters to tie.
    - `where`: `pytree -> node` or `pytree -> tuple of nodes`: the copies to remove.
    - `get`: `pytree -> node` or `pytree -> tuple of nodes`, one per `where` node, of
        the same structure and shapes: the parameters that take their place.

    **Fields:** `pytree` (with each `where` node replaced by a placeholder), and the
    static `where` and `get`. Calling `shared()` returns the full pytree.

    ```python
    embedding = ecliptic.nn.Embedding(100, 16, key=k1)
    head = ecliptic.nn.Linear(16, 100, use_bias=False, key=k2)
    tied = ecliptic.nn.Shared(
        (embedding, head), lambda p: p[1].weight, lambda p: p[0].weight
    )
    embedding, head = tied()  # head.weight is embedding.weight
    ```
    """

    pytree: _T
    where: Callable[[_T], Any] = field(static=True)
    get: Callable[[_T], Any] = field(static=True)

    def __init__(self, pytree: _T, where: Callable[[_T], Any], get: Callable[[_T], Any]):
        for name, fn in (("where", where), ("get", get)):
            if not callable(fn):
                raise TypeError(
                    f"Shared(pytree, where, get): {name} must be a function pytree -> "
                    f"node(s); got {fn!r}."
                )
        targets, sources = where(pytree), get(pytree)
        target_layout, source_layout = _layout(targets), _layout(sources)
        if target_layout != source_layout:
            raise ValueError(
                "Every node being shared together must have the same pytree structure, "
                "shape+dtype of arrays, etc., as each other: in Shared(pytree, where, get), "
                f"`where` selected {target_layout} but `get` selected {source_layout}."
            )
        stripped = tree_at(where, pytree, replace_fn=lambda _: _TIED)
        if any(_is_tied(x) for x in jtu.tree_leaves(get(stripped))):
            raise ValueError(
                "Shared: `get` selects (part of) a node that `where` selects; the tied "
                "value must come from a part of the pytree that `where` leaves in place."
            )
        self.pytree = stripped
        self.where = where
        self.get = get

    def __call__(self) -> _T:
        """**Returns:** the full pytree, with `get`'s nodes placed where `where` points."""
        return tree_at(self.where, self.pytree, self.get(self.pytree), is_leaf=_is_tied)
