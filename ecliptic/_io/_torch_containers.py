"""Containers and wrappers in state dicts of PyTorch's format, registered in the table
of PyTorch layouts (`ecliptic._io._torch_registry`); they walk on into their children.

- `nn.Sequential`: PyTorch names the layers ``0``, ``1``, ...; ours sit in ``layers``.
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

from .._filters import is_array
from .._paths import display, join
from ..nn import Conv, ConvTranspose, Sequential, SpectralNorm, Stacked, WeightNorm
from ._arrays import is_key_dtype, stored_struct
from ._errors import CheckpointError
from ._state_dict_reader import Renamed
from ._torch_registry import register_torch_container, torch_layout_for


def _layer_views(stacked: Stacked, state: Any) -> list[tuple[Any, Any]]:
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


def _check_parametrised(node: Any, name: str) -> None:
    """Raise unless `node`'s wrapped weight has the same layout here and in PyTorch (the
    parametrisation's magnitude and vectors are laid out after it)."""
    layer = node.layer
    layout = torch_layout_for(layer)
    plain = layout is None or layout.container
    if not (plain or (isinstance(layer, Conv) and not isinstance(layer, ConvTranspose))):
        raise CheckpointError(
            f"{display(name)}: a {type(node).__name__} around a {type(layer).__name__} has "
            "no PyTorch format here (the layer's weight is laid out differently in "
            'PyTorch); use format="native"'
        )


def _weight_renames(node: Any, name: str) -> dict[str, str]:
    """Where PyTorch keeps the wrapped layer's (unnormalised) weight."""
    original = "original1" if isinstance(node, WeightNorm) else "original"
    return {join(name, node.weight_name): join(_prefix(node, name), original)}


def _parametrisation_entries(node: Any, name: str, state: Any) -> list[tuple[str, Any]]:
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


# ----------------------------------------------------------------- the registered layouts


def _sequential_export(node: Any, name: str, state: Any, emit: Any, walk: Any) -> None:
    for i, layer in enumerate(node.layers):
        walk(layer, join(name, str(i)), state, emit)


def _sequential_load(node: Any, name: str, state: Any, io: Any, walk: Any) -> tuple[Any, Any]:
    layers = []
    for i, layer in enumerate(node.layers):
        layer, state = walk(layer, join(name, str(i)), state, io)
        layers.append(layer)
    return io.at(name).replace(node, layers=tuple(layers)), state


def _stacked_export(node: Any, name: str, state: Any, emit: Any, walk: Any) -> None:
    # PyTorch's ModuleList: one entry per layer.
    for i, (layer, layer_state) in enumerate(_layer_views(node, state)):
        walk(layer, join(name, str(i)), layer_state, emit)


def _stacked_load(node: Any, name: str, state: Any, io: Any, walk: Any) -> tuple[Any, Any]:
    layers, layer_states = [], []
    for i, (layer, layer_state) in enumerate(_layer_views(node, state)):
        layer, layer_state = walk(layer, join(name, str(i)), layer_state, io)
        layers.append(layer)
        layer_states.append(layer_state)
    new = io.at(name).replace(node, layers=_restack(node.layers, layers))
    if state is not None:
        state = state.update(_restack(state.substate(node.layers), layer_states))
    return new, state


def _parametrised_export(node: Any, name: str, state: Any, emit: Any, walk: Any) -> None:
    _check_parametrised(node, name)
    renames = _weight_renames(node, name)
    walk(node.layer, name, state, lambda k, v: emit(renames.get(k, k), v))
    for key, value in _parametrisation_entries(node, name, state):
        emit(key, value)


def _parametrised_load(node: Any, name: str, state: Any, io: Any, walk: Any) -> tuple[Any, Any]:
    _check_parametrised(node, name)
    renamed = Renamed(io, _weight_renames(node, name))
    layer, state = walk(node.layer, name, state, renamed)
    fields: dict[str, Any] = {"layer": layer}
    entries = _parametrisation_entries(node, name, state)
    values = [io.get(key, *stored_struct(old), optional=False) for key, old in entries]
    if isinstance(node, WeightNorm):
        if values[0] is not None:
            fields["g"] = values[0]
    elif entries and all(value is not None for value in values):
        state = io.at(name).set_state(state, node.uv_index, tuple(values))
    return io.at(name).replace(node, **fields), state


for _container, _export, _load in (
    (Sequential, _sequential_export, _sequential_load),
    (Stacked, _stacked_export, _stacked_load),
    (WeightNorm, _parametrised_export, _parametrised_load),
    (SpectralNorm, _parametrised_export, _parametrised_load),
):
    register_torch_container(_container, export=_export, load=_load)
