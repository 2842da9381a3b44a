"""Named parameters and state dicts, in ecliptic's own naming or PyTorch's.

Names are dotted paths, as PyTorch's: attribute names, sequence indices and dict keys
joined with dots (``layers.0.weight``). Two formats:

- ``"native"``: the pytree's own paths and layouts, every array leaf.
- ``"torch"``: the names and layouts of the equivalent PyTorch modules, from the table
  of PyTorch layouts (`ecliptic._io._torch_registry`): a PyTorch model built from the
  same layers has the same ``state_dict`` keys and shapes, so weights move both ways.

State (`ecliptic.nn.State`) is passed beside the model: its entries are named by the
path of the `StateIndex` that points to them (``bn.batch_state_index.0``), and in the
torch format BatchNorm statistics become ``running_mean``/``running_var``/
``num_batches_tracked``. Containers and wrappers with a PyTorch counterpart
(`Sequential`, `Stacked`, `WeightNorm`, `SpectralNorm`) take its layout too (see
`ecliptic._io._torch_containers`); reading is in `ecliptic._io._state_dict_reader`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jaxtyping import PyTree

from .._paths import children_with_names, display, join, named_leaves
from ..nn import State, StateIndex
from . import _torch_containers, _torch_layouts  # noqa: F401 (they register their layouts)
from ._arrays import array_like, stored_struct
from ._errors import CheckpointError, StateDictError
from ._long_lists import first_few
from ._state_dict_reader import ARRAYS, Reader, Renamed, to_numpy
from ._torch_registry import torch_layout_for

__all__ = [
    "StateDictReport",
    "check_state_dict",
    "load_state_dict",
    "named_parameters",
    "state_dict",
]

_FORMATS = ("native", "torch")


@dataclass(frozen=True)
class StateDictReport:
    """How a state dict fits a model: `missing` (the model's keys the state dict lacks),
    `unexpected` (keys the model does not have) and `mismatched` (``"key: problem"``
    lines: wrong shape, incompatible dtype, ...). `ok` is true when all are empty."""

    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    mismatched: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        if self.ok:
            return "all keys match"
        lines = []
        for title, items in (
            ("missing keys", self.missing),
            ("unexpected keys", self.unexpected),
            ("mismatched keys", self.mismatched),
        ):
            if items:
                lines.append(f"  {title} ({len(items)}):")
                lines += [f"    {item}" for item in first_few(items)]
        stateful = ("running_mean", "running_var", "_u", "_v")
        if any(k.rsplit(".", 1)[-1] in stateful for k in self.unexpected):
            lines.append(
                "  (to load BatchNorm statistics or SpectralNorm vectors pass the model's "
                "State: state=...)"
            )
        return "\n".join(lines)


def _check_format(format: str) -> bool:
    if format not in _FORMATS:
        raise ValueError(f"format must be one of {_FORMATS}; got {format!r}.")
    return format == "torch"


# ---------------------------------------------------------------------------- export


def _walk_export(node: Any, name: str, torch: bool, state: Any, emit: Any) -> None:
    if isinstance(node, ARRAYS):
        emit(name, node)
        return
    if isinstance(node, StateIndex) and (state is not None or torch):
        # With a state: its value; in PyTorch's format without one: nothing (the initial
        # value is no parameter).
        for sub, leaf in named_leaves(state.get(node) if state is not None else ()):
            emit(join(name, sub), leaf)
        return
    if torch:
        layout = torch_layout_for(node)
        if layout is not None:
            layout.export(node, name, state, emit, _export_torch)
            return
    children, treedef = children_with_names(node)
    if treedef.num_nodes == 1 and treedef.num_leaves == 1:
        return  # a non-array leaf: not part of a state dict
    for sub, child in children:
        _walk_export(child, join(name, sub), torch, state, emit)


def _export_torch(node: Any, name: str, state: Any, emit: Any) -> None:
    _walk_export(node, name, True, state, emit)


def _export(pytree: Any, torch: bool, state: Any) -> Iterator[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    seen: set[str] = set()

    def emit(name: str, value: Any) -> None:
        if name in seen:
            raise CheckpointError(
                f"two entries are both named {display(name)!r}: rename a dict key so that "
                "every path is distinct"
            )
        seen.add(name)
        out.append((name, value))

    _check_state(state)
    _walk_export(pytree, "", torch, state, emit)
    return iter(out)


def _check_state(state: Any) -> None:
    if state is not None and not isinstance(state, State):
        raise TypeError(f"state must be an ecliptic.nn.State or None; got {type(state).__name__}.")


def named_parameters(
    pytree: PyTree, *, state: Any = None, format: str = "native", remove_duplicate: bool = True
) -> Iterator[tuple[str, Any]]:
    """Iterate over the arrays of a pytree with their dotted names.

    **Arguments:**

    - `pytree`: a model or any pytree.
    - `state`: optional `ecliptic.nn.State`; its entries are named by the path of their
      `StateIndex` in `pytree`.
    - `format`: `"native"` (this pytree's paths and arrays, as they are) or `"torch"`
      (PyTorch's names and layouts, as NumPy arrays).
    - `remove_duplicate`: yield an array that appears twice (the same object) only once,
      under its first name, as PyTorch does.

    **Returns:** an iterator of `(name, array)` in flattening order.

    ```python
    for name, p in ecliptic.named_parameters(mlp):
        print(name, p.shape)  # layers.0.weight (32, 2) ...
    ```
    """
    torch = _check_format(format)
    seen: set[int] = set()
    for name, value in _export(pytree, torch, state):
        if remove_duplicate:
            if id(value) in seen:
                continue
            seen.add(id(value))
        yield name, (to_numpy(value, name) if torch else value)


def state_dict(
    pytree: PyTree, *, state: Any = None, format: str = "native"
) -> dict[str, np.ndarray]:
    """Every array of a pytree, as NumPy, by dotted name (PyTorch's `state_dict`).

    **Arguments:**

    - `pytree`: a model or any pytree.
    - `state`: optional `ecliptic.nn.State` holding the model's state (BatchNorm
      statistics, ...); needed with `format="torch"` when the model has a BatchNorm.
    - `format`: `"native"` (the pytree's own names and layouts) or `"torch"` (the names
      and layouts of the equivalent PyTorch modules: load the result with
      `torch_model.load_state_dict({k: torch.from_numpy(v) ...})`).

    **Returns:** a `dict[str, np.ndarray]` of copies (PRNG keys as their raw data).
    Shared arrays appear under each of their names, as in PyTorch.

    ```python
    sd = ecliptic.state_dict(model, format="torch")
    safetensors.numpy.save_file(sd, "for_torch.safetensors")
    ```
    """
    torch = _check_format(format)
    return {name: np.array(to_numpy(v, name)) for name, v in _export(pytree, torch, state)}


# ---------------------------------------------------------------------------- import


def _walk_import(
    node: Any, name: str, torch: bool, state: Any, io: Reader | Renamed
) -> tuple[Any, Any]:
    if isinstance(node, (*ARRAYS, jax.ShapeDtypeStruct)):
        value = io.get(name, *stored_struct(node), optional=False)
        return (node if value is None else array_like(value, node)), state
    if isinstance(node, StateIndex) and (state is not None or torch):
        if state is None:
            return node, state
        old = state.get(node)
        treedef = jax.tree_util.tree_structure(old)
        new = []
        for sub, leaf in named_leaves(old):
            value = io.get(join(name, sub), *stored_struct(leaf), optional=False)
            new.append(leaf if value is None else array_like(value, leaf))
        return node, state.set(node, jax.tree_util.tree_unflatten(treedef, new))
    if torch:
        layout = torch_layout_for(node)
        if layout is not None:
            return layout.load(node, name, state, io, _import_torch)
    children, treedef = children_with_names(node)
    if treedef.num_nodes == 1 and treedef.num_leaves == 1:
        return node, state  # a non-array leaf: kept as it is
    new_children = []
    for sub, child in children:
        child, state = _walk_import(child, join(name, sub), torch, state, io)
        new_children.append(child)
    return treedef.unflatten(new_children), state


def _import_torch(node: Any, name: str, state: Any, io: Reader | Renamed) -> tuple[Any, Any]:
    return _walk_import(node, name, True, state, io)


def _run_import(
    pytree: Any, entries: Any, state: Any, format: str
) -> tuple[Any, Any, StateDictReport]:
    torch = _check_format(format)
    _check_state(state)
    if not hasattr(entries, "keys") or not hasattr(entries, "__getitem__"):
        raise TypeError(
            f"state_dict must be a mapping name -> array; got {type(entries).__name__}."
        )
    entries = dict(entries)
    bad = [k for k in entries if not isinstance(k, str)]
    if bad:
        raise TypeError(f"state_dict keys must be strings; got {bad[:3]!r}.")
    io = Reader(entries)
    pytree, state = _walk_import(pytree, "", torch, state, io)
    unexpected = tuple(k for k in entries if k not in io.used)
    report = StateDictReport(tuple(io.missing), unexpected, tuple(io.mismatched))
    return pytree, state, report


def load_state_dict(
    pytree: PyTree,
    state_dict: Any,
    *,
    strict: bool = True,
    state: Any = None,
    format: str = "native",
) -> PyTree:
    """Load a state dict (name -> array) into a model, out of place.

    **Arguments:**

    - `pytree`: the model (or a `filter_eval_shape` skeleton of it) to load into.
    - `state_dict`: a mapping from dotted names to arrays: JAX, NumPy, or anything with
      `__array__` such as PyTorch tensors (torch is never imported here).
    - `strict`: if `True` (default), raise `StateDictError` listing, all at once, the
      missing keys, the unexpected keys and the mismatched ones (wrong shape, or a dtype
      that cannot be cast within its kind). If `False`, load every entry that fits and
      leave everything else as it is in `pytree` (use `check_state_dict` to see what
      was skipped).
    - `state`: optional `ecliptic.nn.State` to load the state entries into (BatchNorm
      running statistics, ...).
    - `format`: `"native"` or `"torch"` (PyTorch's names and layouts), as in
      `state_dict`.

    **Returns:** the loaded pytree; or `(pytree, state)` when `state` is given. Values
    are cast to the model's dtypes (e.g. a float64 NumPy array into a float32 model).

    ```python
    model = ecliptic.load_state_dict(model, torch_model.state_dict(), format="torch")
    ```
    """
    pytree, state, report = _run_import(pytree, state_dict, state, format)
    if strict and not report.ok:
        raise StateDictError(report, _torch_hint(pytree, state_dict, state, format))
    return pytree if state is None else (pytree, state)


def _torch_hint(pytree: Any, entries: Any, state: Any, format: str) -> str:
    """When a state dict that does not fit in the native format would fit in PyTorch's
    (a PyTorch model's state_dict loaded without format="torch"), a line saying so."""
    if format != "native":
        return ""
    try:
        report = _run_import(pytree, entries, state, "torch")[2]
    except Exception:  # the torch layout does not apply to this model at all
        return ""
    if not report.ok:
        return ""
    return (
        "\n  (these are PyTorch's names and layouts: this state dict fits the model with "
        'format="torch")'
    )


def check_state_dict(
    pytree: PyTree, state_dict: Any, *, state: Any = None, format: str = "native"
) -> StateDictReport:
    """Compare a state dict with a model without loading it.

    **Arguments:** as for `load_state_dict`.

    **Returns:** a `StateDictReport` with the `missing`, `unexpected` and `mismatched`
    keys; `report.ok` is true when `load_state_dict(..., strict=True)` would succeed.

    ```python
    report = ecliptic.check_state_dict(model, sd, format="torch")
    print(report.missing)
    ```
    """
    return _run_import(pytree, state_dict, state, format)[2]
