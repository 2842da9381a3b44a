"""`Stacked`: N layers of one structure stored as one layer with stacked arrays, run with
`jax.lax.scan`, so that deep models compile once per layer instead of once per depth.

Layout: `stacked.layers` is a single Module of the layers' type in which every array
leaf has a leading axis of size `n`; non-array leaves and static fields are shared by all
layers. Calling scans over that axis (`_stacked_scan`), slicing one layer's arrays per
step (and one layer's key and state when given).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import PRNGKeyArray

from .._checks import is_int
from .._filters import is_array
from .._messages import short_repr, type_name
from .._module import Module, field, new_instance
from .._paths import flatten_one_level_with_path
from .._vmap import filter_vmap
from ._arg_checks import check_key
from ._scope import named_scope_call
from ._stacked_scan import check_scan_options, run_stacked
from ._stateful import MISSING_STATE, State, StatefulLayer, state_indices, with_markers


class Stacked(StatefulLayer):
    """`n` layers of identical structure applied one after another, run with `lax.scan`.

    The layers are stored as ONE layer whose array leaves carry a leading axis of size
    `n` (static fields and non-array leaves are shared), so a deep stack traces and
    compiles a single layer: compile time stays flat in `n`, where a Python loop over
    `n` separate layers grows linearly.

    **Arguments:**

    - `make_layer`: `key -> layer`, building one layer (any callable pytree, usually a
        Module). It is run once under `jax.vmap` over `n` keys; if it needs concrete
        values (Python control flow on arrays), the layers are built one by one instead,
        with the same result.
    - `n`: the number of layers, an int >= 1.
    - `key`: a PRNG key (keyword only), split into one key per layer.
    - `apply`: optional `(layer, x, ...) -> x` run in place of `layer(x, ...)` at each
        step, e.g. a residual connection `lambda layer, x: x + layer(x)`. It receives
        what the layer would: the layer's state (positionally, after `x`) when the
        layers are stateful (then it returns `(x, state)`), any extra keyword arguments
        of the call, and `key=` (the layer's key) when the call was given a key and
        `apply` has a `key` parameter (an `apply` without one is called without it).
    - `checkpoint`: what each layer keeps for the backward pass. `"auto"` (default):
        the outputs of matrix products and convolutions, recomputing the element-wise
        work between them (cheap, and it spares the scan from stacking every
        intermediate: in `benchmarks/compile_stacked.py` this made stacked training
        steps 1.4-1.7x faster than saving everything); `False`: every intermediate, as a
        plain `lax.scan`; `True`: nothing (the whole layer is recomputed, least memory);
        or any `jax.checkpoint` policy, e.g. `jax.checkpoint_policies.dots_saveable`.
    - `unroll`: how many layers each scan iteration runs (`lax.scan(unroll=...)`).

    **Parameters:** `layers`, a Module of the layers' type whose every array has shape
    `(n, *shape_in_one_layer)`. `stacked[i]` is layer `i` (a normal layer), `stacked[a:b]`
    a `Stacked` of a slice, `len(stacked) == n`, `stacked.unstack()` the list of layers;
    `stack_layers(list)` builds a `Stacked` from separate layers (e.g. loaded weights).

    **Input/output:** the first layer's input; each layer's output is the next layer's
    input, so it must keep the input's shape, dtype and pytree structure.

    **Randomness:** `stacked(x, key=k)` splits `k` into one key per layer and passes
    `key=` to each; without a key no random operation is added and layers are called
    as `layer(x)`.

    **State:** if the layers are stateful (`StatefulLayer`, e.g. containing
    `BatchNorm`), call `y, state = stacked(x, state)`: each layer's entries in the state
    have a leading axis `n` and are threaded through the scan. Build the model with
    `make_with_state(Stacked)(...)` or `State(stacked)`.

    ```python
    block = lambda k: ecliptic.nn.MLP(64, 64, 128, 1, key=k)
    stack = ecliptic.nn.Stacked(block, 32, key=jax.random.key(0),
                                apply=lambda layer, x: x + layer(x))
    y = stack(jnp.ones(64))      # shape (64,)
    stack.layers.layers[0].weight.shape  # (32, 128, 64)
    ```
    """

    layers: Any
    apply: Callable[..., Any] | None
    n: int = field(static=True)
    checkpoint: Any = field(static=True)
    unroll: int = field(static=True)

    def __init__(
        self,
        make_layer: Callable[[jax.Array], Any],
        n: int,
        *,
        key: PRNGKeyArray,
        apply: Callable[..., Any] | None = None,
        checkpoint: bool | str | Callable[..., Any] = "auto",
        unroll: int = 1,
    ):
        if not callable(make_layer):
            raise TypeError(
                f"Stacked(make_layer, n): make_layer must be a callable key -> layer; got "
                f"{short_repr(make_layer)}."
            )
        _check_takes_one_key(make_layer, "Stacked")
        n = _check_n(n, "Stacked")
        check_key(key, "Stacked")
        check_scan_options(apply, checkpoint, unroll, "Stacked")
        keys = jax.random.split(key, n)
        try:
            layers = filter_vmap(make_layer)(keys)
        except _TRACER_ERRORS:
            # The constructor needs concrete values: build the layers one by one.
            layers = _stack([make_layer(k) for k in keys], "Stacked")
        _check_layer(layers, "Stacked: make_layer(key)")
        self.layers = layers
        self.apply = apply
        self.n = n
        self.checkpoint = checkpoint
        self.unroll = unroll

    def is_stateful(self) -> bool:
        """Whether the stacked layers take and return a `State`. **Returns:** a bool."""
        layer = self.layers
        return isinstance(layer, StatefulLayer) and bool(layer.is_stateful())

    @named_scope_call
    def __call__(
        self,
        x: Any,
        state: State = MISSING_STATE,
        *,
        key: PRNGKeyArray | None = None,
        **kwargs: Any,
    ) -> Any:
        """**Arguments:**

        - `x`: the input of the first layer (any pytree of arrays).
        - `state`: the model's `State`, only when the layers are stateful.
        - `key`: optional PRNG key, split into one key per layer.
        - `**kwargs`: passed unchanged to every layer (e.g. `mask=...`,
            `inference=True`).

        **Returns:** the last layer's output; `(output, state)` when stateful.
        """
        return run_stacked(self, x, state, key, kwargs)[0]

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int | slice) -> Any:
        """`stacked[i]`: layer `i` (negative indices count from the end);
        `stacked[a:b:c]`: a `Stacked` of those layers."""
        if isinstance(index, slice):
            chosen = range(self.n)[index]
            if len(chosen) == 0:
                raise IndexError(f"Stacked[{index}]: the slice selects no layers (n={self.n}).")
            layers = _map_arrays(lambda a: a[index], self.layers)
            return _make(layers, len(chosen), self.apply, self.checkpoint, self.unroll)
        if is_int(index):
            if not -self.n <= index < self.n:
                raise IndexError(f"Stacked index {index} is out of range for n={self.n} layers.")
            i = int(index) % self.n
            return _map_arrays(lambda a: a[i], self.layers)
        raise TypeError(f"Stacked indices must be ints or slices; got {short_repr(index)}.")

    def __iter__(self) -> Iterator[Any]:
        return iter(self.unstack())

    def unstack(self) -> list[Any]:
        """The `n` layers as separate Modules (layer `i`'s arrays are `layers[i]`).

        **Returns:** a list of `n` layers; `stack_layers` turns it back into a `Stacked`.
        Stateful layers keep the stacked model's `StateIndex`es, so they share state
        keys: layer `i`'s state is `jax.tree.map(lambda v: v[i],
        state.substate(stacked))`.

        ```python
        blocks = stacked.unstack()
        same = ecliptic.nn.stack_layers(blocks)
        ```
        """
        leaves, treedef = jtu.tree_flatten(self.layers)
        split = [list(leaf) if is_array(leaf) else None for leaf in leaves]
        return [
            treedef.unflatten([s[i] if s is not None else leaf for s, leaf in zip(split, leaves)])
            for i in range(self.n)
        ]


def _map_arrays(fn: Callable[[Any], Any], tree: Any) -> Any:
    return jtu.tree_map(lambda leaf: fn(leaf) if is_array(leaf) else leaf, tree)


def _make(layers: Any, n: int, apply: Any, checkpoint: Any, unroll: int) -> Stacked:
    """A `Stacked` around already stacked layers (no building, no vmap)."""
    return new_instance(
        Stacked, layers=layers, apply=apply, n=n, checkpoint=checkpoint, unroll=unroll
    )


def stack_layers(
    layers: Sequence[Any],
    *,
    apply: Callable[..., Any] | None = None,
    checkpoint: bool | str | Callable[..., Any] = "auto",
    unroll: int = 1,
) -> Stacked:
    """Stack separate layers of identical structure into one `Stacked`.

    The inverse of `Stacked.unstack`, e.g. to load per-layer weights into a scanned model.

    **Arguments:**

    - `layers`: a non-empty list/tuple of layers with the same type, tree structure,
        static fields, non-array values, and array shapes and dtypes.
    - `apply`, `checkpoint`, `unroll`: as for `Stacked`.

    **Returns:** a `Stacked` whose `layers` holds each array of the layers stacked along a
    new leading axis (layer `i` at index `i`). `StateIndex`es of stateful layers are
    unified to the first layer's; build the state from the result (`State(stacked)`).

    **Raises:** `ValueError` naming the first field that differs between two layers.

    ```python
    blocks = [ecliptic.nn.Linear(8, 8, key=k) for k in jax.random.split(key, 4)]
    stack = ecliptic.nn.stack_layers(blocks)   # stack.layers.weight.shape == (4, 8, 8)
    ```
    """
    if isinstance(layers, Module) or not isinstance(layers, Sequence):
        raise TypeError(
            f"stack_layers(layers): layers must be a list or tuple of layers; got "
            f"{type_name(layers)}."
        )
    _check_n(len(layers), "stack_layers")
    check_scan_options(apply, checkpoint, unroll, "stack_layers")
    for i, layer in enumerate(layers):
        _check_layer(layer, f"stack_layers: layers[{i}]")
    return _make(_stack(layers, "stack_layers"), len(layers), apply, checkpoint, unroll)


# Errors that mean "this constructor needs concrete values", on which `Stacked` falls
# back from building the layers under `vmap` to building them one by one.
_TRACER_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
)


def _check_takes_one_key(make_layer: Callable[..., Any], where: str) -> None:
    """A clear error for a layer factory that cannot be called as ``make_layer(key)``."""
    try:
        signature = inspect.signature(make_layer)
    except (TypeError, ValueError):  # no signature available: let the call decide
        return
    try:
        signature.bind(None)
    except TypeError:
        raise TypeError(
            f"{where}(make_layer, n): make_layer must take one argument, a PRNG key "
            f"(make_layer(key) -> layer; each layer gets its own key); got "
            f"{short_repr(make_layer)} with signature {signature}, which cannot be called "
            "with one. Write e.g. `lambda key: nn.Linear(3, 3, key=key)`."
        ) from None


def _check_n(n: Any, where: str) -> int:
    if not is_int(n) or n < 1:
        raise ValueError(f"{where}: n (the number of layers) must be an int >= 1; got {n!r}.")
    return int(n)


def _check_layer(layer: Any, where: str) -> None:
    if not callable(layer):
        raise TypeError(f"{where} must return a callable layer; got {short_repr(layer)}.")


def _stack(layers: Sequence[Any], where: str) -> Any:
    layers = _unify_state_indices(layers)
    first_leaves, treedef = jtu.tree_flatten(layers[0])
    columns: list[list[Any]] = [[leaf] for leaf in first_leaves]
    for i, layer in enumerate(layers[1:], start=1):
        leaves, other = jtu.tree_flatten(layer)
        if other != treedef or not all(map(_same_leaf, first_leaves, leaves)):
            difference = _first_difference(layers[0], layer, "")
            raise ValueError(
                f"{where}: every layer must have the same structure, static fields, "
                f"non-array values and array shapes/dtypes; layers[0] and layers[{i}] differ "
                f"at {difference or 'their tree structure'}."
            )
        for column, leaf in zip(columns, leaves):
            column.append(leaf)
    stacked = [jnp.stack(col) if is_array(col[0]) else col[0] for col in columns]
    return treedef.unflatten(stacked)


def _same_value(a: Any, b: Any) -> bool:
    if a is b:
        return True
    try:
        return bool(a == b)
    except Exception:  # arrays in static fields, odd __eq__: compare by identity only
        return False


def _same_leaf(a: Any, b: Any) -> bool:
    if is_array(a) or is_array(b):
        return (
            is_array(a)
            and is_array(b)
            and jnp.shape(a) == jnp.shape(b)
            and jnp.result_type(a) == jnp.result_type(b)
        )
    return _same_value(a, b)


def _describe(x: Any) -> str:
    if is_array(x):
        return f"{jnp.result_type(x).name}{list(jnp.shape(x))}"
    name = getattr(x, "__qualname__", None) or getattr(x, "__name__", None)
    if callable(x) and isinstance(name, str):
        return f"function {name}"
    return short_repr(x, 40)


def _first_difference(a: Any, b: Any, path: str) -> str | None:
    """A description of the first place where two layers differ, or None."""
    where = path or "the layer itself"
    if type(a) is not type(b):
        return f"{where}: {_describe(a)} ({type_name(a)}) vs {_describe(b)} ({type_name(b)})"
    if isinstance(a, Module):
        cls = type(a)
        for name in cls.__ecliptic_static_fields__:
            va, vb = a.__dict__.get(name), b.__dict__.get(name)
            if not _same_value(va, vb):
                return f"{path}.{name} (static field): {short_repr(va, 40)} vs {short_repr(vb, 40)}"
        for name in cls.__ecliptic_dynamic_fields__:
            found = _first_difference(a.__dict__.get(name), b.__dict__.get(name), f"{path}.{name}")
            if found:
                return found
        return None
    if a is None or is_array(a):
        return None if _same_leaf(a, b) else f"{where}: {_describe(a)} vs {_describe(b)}"
    children_a, def_a = flatten_one_level_with_path(a)
    children_b, def_b = flatten_one_level_with_path(b)
    if jtu.treedef_is_leaf(def_a) and len(children_a) == 1 and children_a[0][1] is a:
        return None if _same_value(a, b) else f"{where}: {_describe(a)} vs {_describe(b)}"
    if def_a != def_b:
        return f"{where}: {def_a} vs {def_b}"
    for (key, ca), (_, cb) in zip(children_a, children_b):
        found = _first_difference(ca, cb, path + jtu.keystr(key))
        if found:
            return found
    return None


def _unify_state_indices(layers: Sequence[Any]) -> list[Any]:
    """Give every layer the `StateIndex` markers of the first, so that layers built
    separately (each with fresh markers) stack into one state layout."""
    first = [index.marker for index in state_indices(layers[0])]
    out = [layers[0]]
    for layer in layers[1:]:
        if not first or len(list(state_indices(layer))) != len(first):
            out.append(layer)  # nothing to rename, or a difference the caller reports
            continue
        markers = iter(first)
        out.append(with_markers(layer, lambda _path, _index, m=markers: next(m)))
    return out
