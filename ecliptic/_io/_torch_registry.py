"""The one table of PyTorch layouts: for each layer type, how its arrays are named and
laid out in the state dict of the equivalent PyTorch module, and how they load back.

`state_dict`/`load_state_dict` with ``format="torch"`` look every node up here by its
class (then its bases, in MRO order); a node without an entry is walked field by field,
with its own names. The built-in layers (`_torch_layouts`) and containers
(`_torch_containers`) register here exactly as a user's layer does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._messages import type_name
from .._paths import display, join
from ._errors import CheckpointError
from ._state_dict_reader import LayerEntries

__all__ = ["register_torch_layout"]


@dataclass(frozen=True)
class TorchLayout:
    """A registered layout, in the walker's terms: `export(node, name, state, emit,
    walk)` emits ``(full name, array)`` pairs; `load(node, name, state, reader, walk)`
    returns ``(node, state)``; `walk` continues the walk below a container. `container`
    is true for containers, whose children keep their own layouts."""

    export: Callable[..., None]
    load: Callable[..., tuple[Any, Any]]
    container: bool


_LAYOUTS: dict[type, TorchLayout] = {}


def _at_layer(name: str, error: CheckpointError) -> CheckpointError:
    return CheckpointError(f"{display(name)}: {error}")


def register_torch_layout(
    layer_type: type,
    *,
    export: Callable[[Any, Any], Mapping[str, Any]],
    load: Callable[[Any, LayerEntries, Any], tuple[Any, Any]],
) -> None:
    """Say how a layer type is named and laid out in PyTorch's state dicts.

    **Arguments:**

    - `layer_type`: the layer's class. Its subclasses use the same layout unless they
      register their own; registering a type again replaces its layout.
    - `export`: `export(layer, state) -> {name: array}`, the entries of PyTorch's module
      (names relative to the layer, arrays in PyTorch's layout). `state` is the
      `ecliptic.nn.State` passed to `state_dict`, or None.
    - `load`: `load(layer, entries, state) -> (layer, state)`, the inverse. Read each
      entry with `entries.get(name, shape, dtype)` (PyTorch's shape; it returns a NumPy
      array of `dtype`, or None when the entry is missing or does not fit, which is then
      reported), and build the new layer with `entries.replace(layer, field=value, ...)`.
      `entries.problem(name, message)` reports any other problem, and
      `entries.set_state(state, index, value)` loads into the `State`.

    A `CheckpointError` raised by either function is reported with the layer's path.

    **Returns:** nothing.

    ```python
    def export(layer, state):
        return {"weight": np.asarray(layer.w).T}

    def load(layer, entries, state):
        w = entries.get("weight", layer.w.shape[::-1], layer.w.dtype)
        return (layer if w is None else entries.replace(layer, w=w.T)), state

    ecliptic.register_torch_layout(MyDense, export=export, load=load)
    ```
    """
    if not isinstance(layer_type, type):
        raise TypeError(
            f"register_torch_layout: layer_type must be a class; got {type_name(layer_type)}."
        )
    for what, fn in (("export", export), ("load", load)):
        if not callable(fn):
            raise TypeError(
                f"register_torch_layout: {what} must be a callable; got {type_name(fn)}."
            )

    def export_at(node: Any, name: str, state: Any, emit: Any, walk: Any) -> None:
        try:
            entries = export(node, state)
        except CheckpointError as e:
            raise _at_layer(name, e) from e
        if not isinstance(entries, Mapping):
            raise TypeError(
                f"the torch layout of {type(node).__name__} returned a "
                f"{type_name(entries)} for {display(name)}; export must return a dict "
                "name -> array."
            )
        for sub, value in entries.items():
            emit(join(name, sub), value)

    def load_at(node: Any, name: str, state: Any, reader: Any, walk: Any) -> tuple[Any, Any]:
        try:
            return load(node, reader.at(name), state)
        except CheckpointError as e:
            raise _at_layer(name, e) from e

    _LAYOUTS[layer_type] = TorchLayout(export_at, load_at, container=False)


def register_torch_container(
    container_type: type, *, export: Callable[..., None], load: Callable[..., tuple[Any, Any]]
) -> None:
    """Register a container's layout: functions in the walker's terms (see
    `TorchLayout`), which walk on into the container's children."""
    _LAYOUTS[container_type] = TorchLayout(export, load, container=True)


def torch_layout_for(node: Any) -> TorchLayout | None:
    """The layout registered for `node`'s class or its nearest base class, or None."""
    for klass in type(node).__mro__:
        layout = _LAYOUTS.get(klass)
        if layout is not None:
            return layout
    return None
