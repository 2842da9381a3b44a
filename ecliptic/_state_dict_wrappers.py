"""Containers and wrappers in state dicts of PyTorch's format.

- `nn.Stacked`: the PyTorch equivalent of N stacked layers is an ``nn.ModuleList`` of N
  separate layers (``blocks.0.weight``, ``blocks.1.weight``, ...), so the stacked arrays
  are viewed one layer at a time, each with the slice of the model's `State` that
  belongs to it, and stacked again after loading.
- `nn.WeightNorm` / `nn.SpectralNorm`: PyTorch's parametrisations keep the wrapped
  layer's entries where they are, except its weight, which moves under
  ``parametrizations.<weight>`` (``original0``/``original1`` for weight norm's
  magnitude and direction; ``original`` plus the power iteration's ``0._u``/``0._v``
  for spectral norm).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np

from ._filters import is_array
from ._paths import display, join
from ._serialisation import CheckpointError, is_key_dtype
from ._torch_layouts import converter_for
from .nn import Conv, ConvTranspose, SpectralNorm, Stacked, WeightNorm

PARAMETRISED = (WeightNorm, SpectralNorm)


def layer_views(stacked: Stacked, state: Any) -> list[tuple[Any, Any]]:
    """``[(layer_i, state_i), ...]``: layer ``i`` of `stacked` as its own Module (skeleton
    leaves lose their leading axis too) and, when `state` is given, a `State` holding
    layer ``i``'s entries (else None)."""
    substate = None if state is None else state.substate(stacked.layers)
    views = []
    for i in range(stacked.n):
        layer = jtu.tree_map(lambda leaf, i=i: _take(leaf, i), stacked.layers)
        layer_state = (
            None if substate is None else jtu.tree_map(lambda leaf, i=i: _take(leaf, i), substate)
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


def check_parametrised(node: Any, name: str) -> None:
    """Raise unless `node`'s wrapped weight has the same layout here and in PyTorch (the
    parametrisation's magnitude and vectors are laid out after it)."""
    layer = node.layer
    plain = converter_for(layer) is None
    if not (plain or (isinstance(layer, Conv) and not isinstance(layer, ConvTranspose))):
        raise CheckpointError(
            f"{display(name)}: a {type(node).__name__} around a {type(layer).__name__} has "
            "no PyTorch format here (the layer's weight is laid out differently in "
            'PyTorch); use format="native"'
        )


def weight_renames(node: Any, name: str) -> dict[str, str]:
    """Where PyTorch keeps the wrapped layer's (unnormalised) weight."""
    original = "original1" if isinstance(node, WeightNorm) else "original"
    return {join(name, node.weight_name): join(_prefix(node, name), original)}


def parametrisation_entries(node: Any, name: str, state: Any) -> list[tuple[str, Any]]:
    """The parametrisation's own entries: weight norm's magnitude `g`; spectral norm's
    `u` and `v` (only with a state)."""
    prefix = _prefix(node, name)
    if isinstance(node, WeightNorm):
        return [(join(prefix, "original0"), node.g)]
    if state is None:
        return []
    u, v = state.get(node.uv_index)
    return [(join(prefix, "0._u"), u), (join(prefix, "0._v"), v)]


def _prefix(node: Any, name: str) -> str:
    return join(name, f"parametrizations.{node.weight_name}")
