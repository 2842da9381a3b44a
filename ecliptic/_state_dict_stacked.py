"""`nn.Stacked` in state dicts of PyTorch's format: the PyTorch equivalent of N stacked
layers is an ``nn.ModuleList`` of N separate layers (``blocks.0.weight``,
``blocks.1.weight``, ...), so the stacked arrays are viewed one layer at a time, each with
the slice of the model's `State` that belongs to it, and stacked again after loading.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from ._filters import is_array
from ._serialisation import is_key_dtype
from .nn import Stacked


def layer_views(stacked: Stacked, state: Any) -> list[tuple[Any, Any]]:
    """``[(layer_i, state_i), ...]``: layer ``i`` of `stacked` as its own Module (skeleton
    leaves lose their leading axis too) and, when `state` is given, a `State` holding
    layer ``i``'s entries (else None)."""
    substate = None if state is None else state.substate(stacked.layers)
    views = []
    for i in range(stacked.n):
        layer = jtu.tree_map(lambda leaf, i=i: _take(leaf, i), stacked.layers)
        layer_state = None if substate is None else jtu.tree_map(
            lambda leaf, i=i: _take(leaf, i), substate
        )
        views.append((layer, layer_state))
    return views


def restack_layers(stacked: Stacked, layers: Sequence[Any]) -> Any:
    """`stacked.layers` with its array leaves replaced by those of `layers` stacked."""
    return _restack(stacked.layers, layers)


def restack_state(stacked: Stacked, state: Any, layer_states: Sequence[Any]) -> Any:
    """`state` with the entries of `stacked`'s layers replaced by `layer_states` stacked."""
    if state is None:
        return None
    return state.update(_restack(state.substate(stacked.layers), layer_states))


def _take(leaf: Any, i: int) -> Any:
    if isinstance(leaf, jax.ShapeDtypeStruct):
        return jax.ShapeDtypeStruct(leaf.shape[1:], leaf.dtype)
    return leaf[i] if is_array(leaf) else leaf


def _restack(original: Any, parts: Sequence[Any]) -> Any:
    """`original` with each array leaf replaced by the stack of the parts' leaves at that
    position; a leaf some part did not load (still a skeleton) stays as it was."""
    leaves, treedef = jtu.tree_flatten(original)
    columns = zip(*(treedef.flatten_up_to(part) for part in parts))
    new = [
        _stack(column, old) if all(is_array(c) for c in column) else old
        for old, column in zip(leaves, columns)
    ]
    return treedef.unflatten(new)


def _stack(column: Sequence[Any], old: Any) -> Any:
    if isinstance(old, (np.ndarray, np.generic)):
        return np.stack(column)
    if is_key_dtype(old.dtype):
        return jnp.stack(column)
    # Stacked on the host, then one plain transfer: nothing to compile per shape.
    return jax.device_put(np.stack([np.asarray(c) for c in column]))
