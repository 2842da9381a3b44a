"""State for layers that carry values between calls (batch statistics, power iterations).

The values live outside the model, in a `State` that a stateful layer takes and returns,
so every call stays a pure function. A layer names each piece of its state with a
`StateIndex`: a small Module holding the initial value and a static, unique *marker*.
`State(model)` gathers the initial values by marker; `state.get(index)` /
`state.set(index, value)` read and (out of place) write them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import PyTree

from .._filters import is_array, is_array_like
from .._module import Module, field, replace_fields

_T = TypeVar("_T")
_Value = TypeVar("_Value")

_counter = itertools.count()


class _Marker:
    """A fresh, unique identity for a `StateIndex` (compared by identity, hashable)."""

    __slots__ = ("number",)

    def __init__(self) -> None:
        self.number = next(_counter)

    def __repr__(self) -> str:
        return f"<state #{self.number}>"


class _DeletedInit(Module):
    """What `delete_init_state` leaves in place of a `StateIndex`'s initial value: a
    pytree with no leaves, so the model no longer keeps the initial arrays alive."""

    def __repr__(self) -> str:
        return "<deleted>"


class StateIndex(Module, Generic[_Value]):
    """A key into a `State`, holding the initial value of one piece of a layer's state.

    A stateful layer creates its `StateIndex`es in `__init__`; `State(model)` collects
    their initial values, and the layer's call reads and writes them with
    `state.get(index)` and `state.set(index, value)`.

    **Arguments:**

    - `init`: the initial value: an array or a pytree of arrays (Python numbers are
        converted to arrays). Later values must keep its structure, shapes and dtypes.

    **Fields:** `init` (a child, so `filter_vmap` can build ensembles of stateful models)
    and `marker`, a static identity that is unique to this index and is what `State`
    files the value under. `make_with_state` replaces markers by the index's path in
    the model, so that models built twice are interchangeable.

    ```python
    class Counter(ecliptic.nn.StatefulLayer):
        index: ecliptic.nn.StateIndex

        def __init__(self):
            self.index = ecliptic.nn.StateIndex(jnp.array(0))

        def __call__(self, x, state, *, key=None):
            count = state.get(self.index)
            return x + count, state.set(self.index, count + 1)

    counter, state = ecliptic.nn.make_with_state(Counter)()
    y, state = counter(jnp.ones(3), state)
    ```
    """

    init: Any
    marker: Any = field(static=True)

    def __init__(self, init: _Value):
        def convert(leaf: Any) -> Any:
            if isinstance(leaf, _DeletedInit):
                return leaf
            if not is_array_like(leaf):
                raise TypeError(
                    "StateIndex(init): init must be an array or a pytree of arrays; got a "
                    f"leaf of type {type(leaf).__name__}: {leaf!r}."
                )
            return leaf if is_array(leaf) else jnp.asarray(leaf)

        self.init = jtu.tree_map(convert, init, is_leaf=_is_deleted)
        self.marker = _Marker()


def _is_deleted(x: Any) -> bool:
    return isinstance(x, _DeletedInit)


def _is_index(x: Any) -> bool:
    return isinstance(x, StateIndex)


def state_indices(pytree: Any) -> Iterator[StateIndex[Any]]:
    """The `StateIndex`es in `pytree`, in flattening order. **Arguments:** `pytree`.
    **Returns:** an iterator of `StateIndex`."""
    for leaf in jtu.tree_leaves(pytree, is_leaf=_is_index):
        if isinstance(leaf, StateIndex):
            yield leaf


def with_markers(pytree: Any, new_marker: Callable[[str, StateIndex[Any]], Any]) -> Any:
    """A copy of `pytree` in which every `StateIndex` has the marker
    `new_marker(path, index)` (`path` as `jax.tree_util.keystr` writes it).

    **Arguments:** `pytree`; `new_marker`, called once per index in flattening order.
    **Returns:** the copy.
    """

    def rename(path: Any, leaf: Any) -> Any:
        if not isinstance(leaf, StateIndex):
            return leaf
        return replace_fields(leaf, marker=new_marker(jtu.keystr(path), leaf))

    return jtu.tree_map_with_path(rename, pytree, is_leaf=_is_index)


def _describe(value: Any) -> str:
    def one(leaf: Any) -> str:
        if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):  # arrays, ShapeDtypeStruct
            return f"{jnp.dtype(leaf.dtype).name}{list(leaf.shape)}"
        return type(leaf).__name__

    leaves, treedef = jtu.tree_flatten(value)
    if treedef.num_leaves == 1 and jtu.treedef_is_leaf(treedef):
        return one(leaves[0])
    return str(jtu.tree_unflatten(treedef, [one(leaf) for leaf in leaves]))


class State:
    """The values of a model's state, filed by `StateIndex`: an immutable pytree.

    Stateful layers take a `State` and return an updated one; nothing is mutated, so
    the model and its state go through `filter_jit`, `filter_grad` (as auxiliary
    output), `jax.lax.scan` and `filter_vmap` like any other pytree. The leaves are the
    state's arrays.

    **Arguments:**

    - `model`: a pytree (usually a Module) containing `StateIndex`es; their initial
        values are collected. Usually `make_with_state` is simpler: it builds the model,
        collects the state and drops the initial values from the model.

    **Methods:** `get(index)`, `set(index, value)`, `substate(pytree)`,
    `update(substate)`.

    ```python
    model, state = ecliptic.nn.make_with_state(ecliptic.nn.BatchNorm)(3, "batch", mode="batch")
    batched = jax.vmap(model, axis_name="batch", in_axes=(0, None), out_axes=(0, None))
    y, state = batched(x, state)  # x of shape (batch, 3)
    ```
    """

    __slots__ = ("_values",)

    def __init__(self, model: PyTree):
        values: dict[Any, Any] = {}
        for index in state_indices(model):
            if index.marker in values:
                continue
            if any(_is_deleted(x) for x in jtu.tree_leaves(index.init, is_leaf=_is_deleted)):
                raise ValueError(
                    "State(model): the model's initial state values were removed (by "
                    "delete_init_state or make_with_state), so there is nothing to collect. "
                    "Use the state that make_with_state returned alongside the model."
                )
            values[index.marker] = jtu.tree_map(jnp.asarray, index.init)
        object.__setattr__(self, "_values", values)

    @classmethod
    def _from_dict(cls, values: dict[Any, Any]) -> State:
        new = object.__new__(cls)  # a State is not a Module: it keeps its one slot
        object.__setattr__(new, "_values", values)
        return new

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"cannot set State.{name}: a State is immutable. Make an updated copy with "
            "state = state.set(index, value) (or state.update(substate))."
        )

    def _lookup(self, index: Any, method: str) -> Any:
        if not isinstance(index, StateIndex):
            raise TypeError(
                f"State.{method}(index, ...): index must be a StateIndex; got "
                f"{type(index).__name__}."
            )
        try:
            return self._values[index.marker]
        except KeyError:
            raise ValueError(
                f"State.{method}: this state has no entry for the StateIndex "
                f"{index.marker!r}; the state belongs to another model. Use the state "
                "made together with this model (make_with_state(...) or State(model))."
            ) from None

    def get(self, index: StateIndex[_Value]) -> _Value:
        """The current value stored for `index`.

        **Arguments:** `index`, a `StateIndex` of the model this state was made from.

        **Returns:** its value: a pytree shaped like the index's initial value.

        ```python
        count = state.get(layer.index)
        ```
        """
        return self._lookup(index, "get")

    def set(self, index: StateIndex[_Value], value: _Value) -> State:
        """A new `State` with `value` stored for `index`; this state is left unchanged.

        **Arguments:**

        - `index`: a `StateIndex` of the model this state was made from.
        - `value`: the new value: same pytree structure, shapes and dtypes as the old
            one (Python numbers take the old value's dtype).

        **Returns:** the updated `State`.

        ```python
        state = state.set(layer.index, count + 1)
        ```
        """
        old = self._lookup(index, "set")
        if isinstance(value, (StateIndex, State)):
            raise TypeError(
                f"State.set(index, value): value must be arrays, not a {type(value).__name__}."
            )
        new = _conform(old, value, index)
        values = dict(self._values)
        values[index.marker] = new
        return State._from_dict(values)

    def substate(self, pytree: Any) -> State:
        """The part of this state that belongs to the `StateIndex`es inside `pytree`.

        **Arguments:** `pytree`, e.g. a sublayer of the model.

        **Returns:** a `State` with only those entries; pass it to the sublayer, then
        merge its result back with `update`.

        ```python
        sub = state.substate(model.encoder)
        y, sub = model.encoder(x, sub)
        state = state.update(sub)
        ```
        """
        values = {}
        for index in state_indices(pytree):
            values[index.marker] = self._lookup(index, "substate")
        return State._from_dict(values)

    def update(self, substate: State) -> State:
        """A new `State` with the entries of `substate` replacing this state's.

        **Arguments:** `substate`, a `State` whose entries all belong to this state
        (typically made by `substate` and then updated).

        **Returns:** the merged `State`.

        ```python
        y, sub = model.encoder(x, state.substate(model.encoder))
        state = state.update(sub)
        ```
        """
        if not isinstance(substate, State):
            raise TypeError(
                f"State.update(substate): substate must be a State; got {type(substate).__name__}."
            )
        missing = [m for m in substate._values if m not in self._values]
        if missing:
            raise ValueError(
                f"State.update: the substate has entries {missing} that this state does not "
                "have; it belongs to another model."
            )
        values = dict(self._values)
        values.update(substate._values)
        return State._from_dict(values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        items = ", ".join(f"{m!r}: {_describe(v)}" for m, v in self._values.items())
        return f"State({{{items}}})"


def _conform(old: Any, value: Any, index: StateIndex[Any]) -> Any:
    """``value`` checked against (and Python numbers cast to) the old value's layout."""
    old_leaves, old_def = jtu.tree_flatten(old)
    new_leaves, new_def = jtu.tree_flatten(value)
    if old_def != new_def:
        raise ValueError(
            f"State.set: the new value for {index.marker!r} has structure {new_def}, but "
            f"the state holds structure {old_def}; a state value must keep its structure."
        )
    out = []
    for old_leaf, new_leaf in zip(old_leaves, new_leaves):
        if not is_array(new_leaf):
            if not is_array_like(new_leaf):
                raise TypeError(
                    f"State.set: the new value for {index.marker!r} must be arrays; got "
                    f"{type(new_leaf).__name__}."
                )
            new_leaf = jnp.asarray(new_leaf, dtype=old_leaf.dtype)
        if np.shape(new_leaf) != np.shape(old_leaf) or new_leaf.dtype != old_leaf.dtype:
            raise ValueError(
                f"State.set: the new value for {index.marker!r} is {_describe(value)}, but "
                f"the state holds {_describe(old)}; shapes and dtypes must stay the same "
                "(cast with .astype(...) if needed)."
            )
        out.append(new_leaf)
    return jtu.tree_unflatten(new_def, out)


def _flatten_state(state: State) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    markers = tuple(state._values)
    return tuple(state._values[m] for m in markers), markers


def _flatten_state_with_keys(state: State) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    values, markers = _flatten_state(state)
    return tuple((jtu.DictKey(m), v) for m, v in zip(markers, values)), markers


def _unflatten_state(markers: tuple[Any, ...], values: Any) -> State:
    return State._from_dict(dict(zip(markers, values)))


jtu.register_pytree_with_keys(State, _flatten_state_with_keys, _unflatten_state, _flatten_state)


def delete_init_state(model: PyTree) -> PyTree:
    """A copy of `model` whose `StateIndex`es no longer hold their initial values.

    Once the initial values are in a `State`, the model need not keep a second copy;
    this frees that memory. The indices still work as keys into the state.

    **Arguments:** `model`, a pytree containing `StateIndex`es.

    **Returns:** the same model with every `StateIndex.init` replaced by an empty
    placeholder.

    ```python
    model = ecliptic.nn.BatchNorm(3, "batch", mode="batch")
    state = ecliptic.nn.State(model)
    model = ecliptic.nn.delete_init_state(model)
    ```
    """

    def delete(leaf: Any) -> Any:
        if not isinstance(leaf, StateIndex):
            return leaf
        return replace_fields(leaf, init=_DeletedInit())

    return jtu.tree_map(delete, model, is_leaf=_is_index)


def _stable_markers(model: Any) -> Any:
    """Replace each distinct marker by the path of the first index that carries it."""
    renamed: dict[Any, str] = {}
    return with_markers(model, lambda path, i: renamed.setdefault(i.marker, path or "<root>"))


def make_with_state(make_model: Callable[..., _T]) -> Callable[..., tuple[_T, State]]:
    """Wrap a model constructor so that it returns `(model, state)`.

    Calls `make_model(*args, **kwargs)`, names every `StateIndex` by its path in the
    model (so two models built the same way share their state layout and tree
    structure, e.g. across processes or checkpoints), collects the `State`, and removes
    the initial values from the model (`delete_init_state`).

    **Arguments:** `make_model`, a Module class or any function returning a pytree.

    **Returns:** a function taking `make_model`'s arguments and returning
    `(model, state)`.

    ```python
    model, state = ecliptic.nn.make_with_state(ecliptic.nn.BatchNorm)(3, "batch", mode="batch")
    ```
    """
    if not callable(make_model):
        raise TypeError(f"make_with_state(make_model): must be callable; got {make_model!r}.")

    def build(*args: Any, **kwargs: Any) -> tuple[_T, State]:
        model = _stable_markers(make_model(*args, **kwargs))
        state = State(model)
        return delete_init_state(model), state

    return build


class StatefulLayer(Module):
    """Base class for layers called as `layer(x, state, *, key=None) -> (y, state)`.

    `Sequential` passes the state only to layers that subclass `StatefulLayer` and whose
    `is_stateful()` is true; every other layer is called as `layer(x, key=key)`.

    **Methods:** `is_stateful()`: whether this layer takes and returns a state; `True`
    unless overridden (a container may answer according to its contents).

    ```python
    class AddCount(ecliptic.nn.StatefulLayer):
        index: ecliptic.nn.StateIndex
        ...
        def __call__(self, x, state, *, key=None):
            return x + state.get(self.index), state
    ```
    """

    def is_stateful(self) -> bool:
        """Whether calls take and return a `State`. **Returns:** a bool."""
        return True


class _MissingState:
    """The default of a stateful layer's `state` argument, to detect a forgotten state."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<no state>"


MISSING_STATE: Any = _MissingState()


def check_state(state: Any, layer: str) -> State:
    """Raise a clear error unless ``state`` is a `State` (shared by the stateful layers)."""
    if state is MISSING_STATE:
        raise TypeError(
            f"{layer} is a stateful layer: call it as `y, state = layer(x, state)`, with the "
            "State from `model, state = ecliptic.nn.make_with_state(Model)(...)`."
        )
    if not isinstance(state, State):
        raise TypeError(
            f"{layer}(x, state): state must be an ecliptic.nn.State; got "
            f"{type(state).__name__}. (A PRNG key goes by keyword: key=...)"
        )
    return state


__all__ = [
    "State",
    "StateIndex",
    "StatefulLayer",
    "delete_init_state",
    "make_with_state",
]
